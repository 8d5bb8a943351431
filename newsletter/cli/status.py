"""``newsletter status``: the last runs, the next send times, whether digests go out."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import click

from newsletter.cli.common import config_option, handles_errors, load_config, now_utc

RATE_DAYS = 30  # the window of the bounce and complaint rates
MAX_BOUNCE_RATE = 0.02  # above it: a warning line
MAX_COMPLAINT_RATE = 0.001


@click.command()
@config_option
@click.option(
    "--runs",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="How many recent runs to show.",
)
@handles_errors
def status(config_path: Path, runs: int) -> None:
    """Show the last runs, the next send times and whether digests are going out."""
    from newsletter import roster, schedule, wiring
    from newsletter.health import silence_warning

    config = load_config(config_path)
    now = now_utc()
    with wiring.open_state(config, read_only=True) as store:
        history = store.last_runs(runs)
        warning = silence_warning(store, config, now)
        who = roster.load(store, config.subscriber_models(), now, write=False)
        # The file's are counted from the roster; every other row by its own status.
        kinds = Counter(status for _, status in who.held)
        kinds.update(
            status
            for key, source, status in store.subscriber_statuses()
            if source != "config" and status != "active" and key not in who.file_keys
        )
        since = now - dt.timedelta(days=RATE_DAYS)
        sent, came_back = store.sent_since(since), store.inbound_since(since)
    click.echo("last runs:")
    if not history:
        click.echo("  none yet")
    for r in history:
        took = (
            f"{(r.finished_at - r.started_at).total_seconds():.0f}s"
            if r.finished_at and r.started_at
            else "running or killed"
        )
        line = (
            f"  {r.started_at:%Y-%m-%d %H:%M} UTC  {r.kind:<5} day {r.day or '-'}  "
            f"papers {r.papers}  sent {r.sent}  failed {r.failed}  unknown {r.unknown}  "
            f"nothing new {r.nothing_new}  ({took})"
        )
        click.echo(line + (f"\n    error: {r.error}" if r.error else ""))
    click.echo("next send times:")
    groups = schedule.group_subscribers(who.mailed, config.schedule.daily_time)
    for group, when in schedule.next_fire_times(groups, config.schedule.weekly_on, now):
        members = len(groups[group])
        click.echo(
            f"  {when:%Y-%m-%d %H:%M %Z}  {group.job_id}  ({members} subscriber{'s' if members != 1 else ''})"
        )
    more = "".join(
        f", {n} {kind}"
        for kind, n in (("paused", kinds["paused"]), ("complained", kinds["complained"]),
                        ("removed", kinds["removed"]), ("pending confirmation", kinds["pending"]))
        if n
    )  # fmt: skip
    click.echo(
        f"subscribers: {len(who.mailed)} active, {kinds['unsubscribed']} unsubscribed, "
        f"{kinds['bounced']} bounced{more}"
    )
    bounces, complaints = came_back["hard"] + came_back["soft"], came_back["complaint"]
    bounce_rate, complaint_rate = (bounces / sent, complaints / sent) if sent else (0.0, 0.0)
    click.echo(
        f"last {RATE_DAYS} days: {sent} sent, {bounces} bounced ({bounce_rate:.2%}), "
        f"{complaints} spam complaint{'s' if complaints != 1 else ''} ({complaint_rate:.2%})"
    )
    if bounce_rate > MAX_BOUNCE_RATE:
        click.echo(
            f"warning: the bounce rate is {bounce_rate:.2%} (above {MAX_BOUNCE_RATE:.0%}): "
            "mailbox providers throttle or block senders above it; check the list's addresses",
            err=True,
        )
    if complaint_rate > MAX_COMPLAINT_RATE:
        click.echo(
            f"warning: the spam complaint rate is {complaint_rate:.2%} (above "
            f"{MAX_COMPLAINT_RATE:.1%}): Gmail and Yahoo ask bulk senders to stay under it, "
            "and never reach 0.3%",
            err=True,
        )
    if warning:
        click.echo(f"warning: {warning}", err=True)
