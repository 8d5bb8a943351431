"""``newsletter status``: the last runs, the next send times, whether digests go out."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from newsletter.cli.common import config_option, handles_errors, load_config, now_utc


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
    from newsletter import roster, schedule
    from newsletter.health import silence_warning
    from newsletter.store import SqliteStore

    config = load_config(config_path)
    now = now_utc()
    with SqliteStore(config.state_path, read_only=True) as store:
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
    if warning:
        click.echo(f"warning: {warning}", err=True)
