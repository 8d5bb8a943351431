"""``preview``, ``send`` and ``run``: one run of the pipeline each, and what it says.

A preview writes every digest to a folder; ``send`` delivers the digests due on a day (or
writes them, ``--dry-run``, or sends one to a test address); ``run`` sends what the schedule
has due now. The stages are imported inside the commands.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli.common import (
    DATE,
    EXIT_FAILED,
    abort,
    check_subscriber,
    config_option,
    date_of,
    date_option,
    from_option,
    handles_errors,
    load_config,
    now_utc,
    open_state,
    signing_key,
)

if TYPE_CHECKING:
    from newsletter.deliver import Outcome, Sender
    from newsletter.pipeline import RunReport

log = logging.getLogger(__name__)


@click.command()
@config_option
@date_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("outbox"),
    show_default=True,
    help="Folder to write the emails (.eml and .html) and index.html to.",
)
@click.option("--subscriber", metavar="EMAIL", help="Preview only this subscriber's digest.")
@from_option
@click.option("--open", "open_", is_flag=True, help="Open the preview's index.html in a browser.")
@handles_errors
def preview(
    config_path: Path,
    date_: dt.datetime | None,
    out: Path,
    subscriber: str | None,
    from_file: Path | None,
    open_: bool,
) -> None:
    """Build every digest and write it to a folder instead of sending (a dry run).

    Records nothing: the state file is read (what each subscriber already got) but never
    written or created, so the same digests can be previewed again and again. index.html
    lists every subscriber, and why those without an email got none.
    """
    from newsletter import sources, wiring
    from newsletter.deliver import PreviewSender
    from newsletter.pipeline import RunOptions, run_once

    config = load_config(config_path)
    check_subscriber(config, subscriber)
    key = signing_key(config, preview=True)
    sender = PreviewSender(out)
    now = now_utc()
    with (
        wiring.scratch_state(config) as store,
        wiring.open_sources(config, from_file, store) as found,
    ):
        report = run_once(
            config,
            RunOptions(day=date_of(date_), only=subscriber),
            source=found,
            store=store,
            sender=sender,
            key=key,
            clock=lambda: now,
        )
    for line in report.source_errors:
        click.echo(line, err=True)
    if report.fetch_failed:
        abort("no source could be fetched: nothing to preview")
    if report.day is None:
        if from_file is not None:
            click.echo(f"{from_file} lists no papers: nothing to preview.")
        else:
            first = now.date() - dt.timedelta(days=sources.HuggingFace.LOOKBACK_DAYS)
            click.echo(
                f"No papers on any day from {first} to {now.date()} (UTC): nothing to preview. "
                "Pick an earlier day with --date YYYY-MM-DD."
            )
        return
    sender.write_index(_not_written(report))
    click.echo(
        f"{report.day}: {report.papers_fetched} papers fetched ({report.papers_considered} considered), "
        f"{len(report.delivered)} digest{'s' if len(report.delivered) != 1 else ''} written, "
        f"{len(report.nothing_new)} subscriber{'s' if len(report.nothing_new) != 1 else ''} with nothing new"
    )
    for email, error in report.failed.items():
        click.echo(f"failed: {email}: {error}", err=True)
    click.echo(f"Open {sender.index_path}")
    if open_:
        click.launch(str(sender.index_path.resolve()))
    if not report.ok:
        sys.exit(EXIT_FAILED)


@click.command()
@config_option
@click.option(
    "--date",
    "date_",
    type=DATE,
    help="The day to send for (YYYY-MM-DD, UTC). Default: today.",
)
@click.option("--subscriber", metavar="EMAIL", help="Send only this subscriber's digest.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Build the digests due but write them to --out instead of sending.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("outbox"),
    show_default=True,
    help="Folder for --dry-run's emails and index.html.",
)
@click.option(
    "--test",
    "test_to",
    metavar="ADDRESS",
    help="Send the --subscriber's digest for the day to ADDRESS instead (the one the day's "
    "run froze for them, if any); its unsubscribe links are test links that change nothing, "
    "and nothing is recorded.",
)
@click.option(
    "--retry-unknown",
    is_flag=True,
    help="Also resend messages whose delivery is unknown (the server may have them: possible duplicates).",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="Seconds to wait when another process is sending from the same state file.",
)
@from_option
@handles_errors
def send(
    config_path: Path,
    date_: dt.datetime | None,
    subscriber: str | None,
    dry_run: bool,
    out: Path,
    test_to: str | None,
    retry_unknown: bool,
    wait: float,
    from_file: Path | None,
) -> None:
    """Fetch, build and deliver the digests due on a day over SMTP.

    Daily subscribers are due every day, weekly ones on schedule.weekly_on. Every recipient
    is recorded in a ledger before the first message goes out, so running it again the same
    day resumes an interrupted send and never sends anyone a digest twice.
    """
    from newsletter import roster, wiring
    from newsletter.deliver import PreviewSender, SmtpSender
    from newsletter.health import logged, silence_warning
    from newsletter.pipeline import RunOptions, run_once

    config = load_config(config_path)
    check_subscriber(config, subscriber)
    if test_to is not None and subscriber is None:
        raise click.UsageError("--test needs --subscriber: whose digest to send")
    # A test copy's links lead to the real page (which says it was a test): the real key.
    key = signing_key(config, preview=dry_run)
    day = date_of(date_) or now_utc().date()
    sender: Sender
    if dry_run:
        sender = PreviewSender(out)
    else:
        sender = SmtpSender(
            wiring.smtp_settings(config), records_deliveries=test_to is None, redirect_to=test_to
        )
    progress = _Progress()
    # A dry run or a test send reads the state but records nothing: a copy in memory.
    state = open_state(config) if sender.records_deliveries else wiring.scratch_state(config)
    with state as store, wiring.open_sources(config, from_file, store) as found:
        if sender.records_deliveries:  # sign-ups never confirmed go first (never mailed)
            roster.purge(store, now_utc(), config.signup.confirm_hours)

        def send_once() -> RunReport:
            return run_once(
                config,
                RunOptions(
                    day=day,
                    only=subscriber,
                    due_only=test_to is None,
                    test=test_to is not None,
                    retry_unknown=retry_unknown,
                    lock_wait=wait,
                    progress=progress,
                ),
                source=found,
                store=store,
                sender=sender,
                key=key,
                clock=now_utc,
            )

        with _graceful_stop(sender):
            report = (
                logged(store, "send", now_utc, send_once)
                if sender.records_deliveries
                else send_once()
            )
        warning = silence_warning(store, config, now_utc()) if sender.records_deliveries else None
    progress.done()
    if isinstance(sender, PreviewSender):
        sender.write_index(_not_written(report))
    if test_to is not None:
        _test_lines(report, test_to)
    _report(report, dry_run=dry_run, ledger=sender.records_deliveries)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    if dry_run and isinstance(sender, PreviewSender):
        click.echo(f"Open {sender.index_path}")
    if not report.ok:
        sys.exit(EXIT_FAILED)


@click.command()
@config_option
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=600,
    show_default=True,
    help="Seconds to wait when another process (serve, another run) is sending.",
)
@handles_errors
def run(config_path: Path, wait: float) -> None:
    """Fetch and send everything due now, once (for cron or systemd timers).

    A subscriber is due when their send time (schedule.daily_at or send_at, in their
    timezone; weekly ones on schedule.weekly_on) passed within schedule.grace_minutes.
    What today's run (UTC) left unsent (SMTP down, deferred) is resumed whatever the send
    times. Running it again sends nothing twice.
    """
    from newsletter import roster, schedule, wiring
    from newsletter.deliver import SmtpSender

    config = load_config(config_path)
    key = signing_key(config, preview=False)
    now = now_utc()
    with open_state(config) as store:  # every run, due or not: cron's is the only upkeep
        roster.purge(store, now, config.signup.confirm_hours)
    grace = dt.timedelta(minutes=config.schedule.grace_minutes)
    unfinished = schedule.unfinished(config, now.date())  # (upgrades an older state file)
    groups = schedule.groups_of(config, now)
    due = schedule.due_now(groups, config.schedule.weekly_on, now, grace)
    if unfinished:  # today's run stopped early (SMTP down, a deferral): resume it now
        log.info("run.resume day=%s subscribers=%d", now.date(), len(unfinished))
        due.setdefault(now.date(), set()).update(unfinished)
    if not due:
        nxt = schedule.next_fire_times(groups, config.schedule.weekly_on, now)
        when = f" (next: {nxt[0][0].job_id} at {nxt[0][1]:%Y-%m-%d %H:%M %Z})" if nxt else ""
        click.echo(f"nothing due now{when}")
        return
    sender = SmtpSender(wiring.smtp_settings(config))
    with (
        open_state(config) as store,
        wiring.open_sources(config, None, store) as found,
        _graceful_stop(sender),
    ):
        reports, warning = schedule.run_due(config, store, found, sender, key, "run", due, wait)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    for report in reports:
        _report(report, dry_run=False)
    if not all(r.ok for r in reports):
        sys.exit(EXIT_FAILED)


def _report(report: RunReport, *, dry_run: bool, ledger: bool = True) -> None:
    for line in report.source_errors:
        click.echo(line, err=True)
    if report.fetch_failed:
        abort("no source could be fetched: nothing was sent")
    _summary(report, dry_run=dry_run, ledger=ledger)


def _not_written(report: RunReport) -> list[tuple[str, str]]:
    """Who got no email in a preview or dry run, and why (for the gallery)."""
    return [
        *((e, "nothing new") for e in report.nothing_new),
        *((e, "unsubscribed") for e in report.unsubscribed),
        *((e, "bounced (suppressed until resubscribed)") for e in report.bounced),
        *((e, f"failed: {detail}") for e, detail in report.failed.items()),
    ]


# How the subscriber stands with the digest that the day's run froze for them.
_FROZEN = {
    "sent": "got",
    "unknown": "was sent (delivery unknown)",
    "failed": "was to get (delivery failed)",
    "pending": "will get (not sent yet)",
    "sending": "is being sent",
}


def _test_lines(report: RunReport, to: str) -> None:
    """Which digest a test send sent: the day's frozen one, or one selected now."""
    day = report.day
    for email in report.delivered:
        status = report.frozen.get(email)
        if status is None:
            click.echo(
                f"test: sent {to} the digest {email} would get for {day}, selected now "
                "(the day's run has not frozen one for them)"
            )
        else:
            click.echo(
                f"test: sent {to} the digest {email} {_FROZEN.get(status, status)} for {day}, "
                f"as the day's run froze it (status {status})"
            )
    for email in report.nothing_new:
        why = "the day's run found" if email in report.frozen else "there is"
        click.echo(f"test: nothing sent: {why} nothing new for {email} on {day}")
    for email in [*report.unsubscribed, *report.bounced]:
        click.echo(f"test: nothing sent: {email} is unsubscribed or bounced (see subscribers list)")


@contextmanager
def _graceful_stop(sender: Sender) -> Iterator[None]:
    """SIGTERM or SIGINT: finish the messages in flight, send no more, keep the ledger."""
    stop = getattr(sender, "stop", None)
    if stop is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        log.warning("send.stopping signal=%s (the rest stays pending for the next run)", signum)
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _Progress:
    """A progress line on a terminal; a plain log line every 100 messages otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.counts: Counter[str] = Counter()

    def __call__(self, recipient: str, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1
        total = sum(self.counts.values())
        line = " ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        if self.tty:
            click.echo(f"\rsending: {total} done ({line})", err=True, nl=False)
        elif outcome.status in ("failed", "unknown"):
            click.echo(f"{outcome.status}: {recipient}: {outcome.detail}", err=True)
        elif total % 100 == 0:
            click.echo(f"progress: {total} done ({line})", err=True)

    def done(self) -> None:
        if self.tty and self.counts:
            click.echo("", err=True)


def _summary(report: RunReport, *, dry_run: bool, ledger: bool = True) -> None:
    """The day's totals; with a ledger (a real send), what this process did first.

    Several processes may work on one day's run (a cron ``run``, a ``send`` to resume):
    each says what it did itself, then where the day's run stands as a whole.
    """
    if report.day is None:
        click.echo("No papers found in the last week: nothing to send.")
        return
    verb = "written" if dry_run else "sent"
    click.echo(
        f"{report.day}: {report.papers_fetched} papers fetched ({report.papers_considered} considered)"
    )
    if ledger:
        statuses = ("sent", "failed", "unknown", "deferred")
        did = [(report.this_run[s], s) for s in statuses if report.this_run[s]]
        this = ", ".join(f"{n} {s}" for n, s in did) or "nothing sent"
        click.echo(f"this process: {this}")
        click.echo(f"the day's run ({report.day}, every process so far):")
    rows = [
        (verb, len(report.delivered)),
        ("failed", len(report.failed)),
        ("unknown", len(report.unknown)),
        ("deferred", len(report.deferred)),
        ("unsubscribed", len(report.unsubscribed)),
        ("bounced", len(report.bounced)),
        ("nothing new", len(report.nothing_new)),
        ("pending", report.pending),
    ]
    for label, n in rows:
        click.echo(f"  {label:<12} {n:>7}")
    for email, detail in list(report.failed.items())[:20]:
        click.echo(f"failed: {email}: {detail}", err=True)
    for email, detail in list(report.unknown.items())[:20]:
        click.echo(f"unknown: {email}: {detail} (not resent unless --retry-unknown)", err=True)
    for email, detail in list(report.deferred.items())[:20]:
        click.echo(f"deferred: {email}: {detail} (the next send or run tries again)", err=True)
    if report.pending:
        click.echo(f"{report.pending} left pending: run send again to resume.", err=True)
    if report.aborted:
        click.echo(f"newsletter: stopped: {report.aborted}", err=True)
