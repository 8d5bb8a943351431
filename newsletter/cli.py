"""The ``newsletter`` command. Thin: parse options, wire the stages, report.

Every failure goes through ``abort()``: one line naming the file, key, URL or recipient,
and an exit code (0 success, 1 a run failed, 2 usage or configuration error). Only this
module configures logging handlers.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import re
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from newsletter import __version__, preflight, schedule, sources, wiring
from newsletter import config as config_mod
from newsletter.deliver import (
    Outcome,
    PreviewSender,
    Sender,
    SmtpSender,
)
from newsletter.errors import ConfigError, NewsletterError, TemplateError
from newsletter.health import logged, silence_warning
from newsletter.pipeline import RunOptions, RunReport, run_once
from newsletter.store import SqliteStore
from newsletter.web import tokens

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
F = TypeVar("F", bound=Callable[..., Any])


def abort(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"newsletter: {message}", err=True)
    sys.exit(code)


def _exit_code(error: NewsletterError) -> int:
    return EXIT_USAGE if isinstance(error, ConfigError | TemplateError) else EXIT_FAILED


def config_option(fn: F) -> F:
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=config_mod.default_path,
        show_default=f"${config_mod.ENV_VAR}, then ./{config_mod.DEFAULT_PATH}",
        help="The YAML file with topics and subscribers.",
    )(fn)


def handles_errors(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # usage errors: click prints them with exit code 2
        except ConfigError as e:
            for line in e.problems:
                click.echo(line, err=True)
            sys.exit(EXIT_USAGE)
        except NewsletterError as e:
            log.debug("error", exc_info=True)
            abort(str(e), _exit_code(e))
        except OSError as e:
            log.debug("error", exc_info=True)
            where = f"{e.filename}: " if e.filename else ""
            abort(f"{where}{e.strerror or e}")
        except Exception as e:  # a bug: one line for the operator, the traceback with -v
            log.debug("internal error", exc_info=True)
            abort(f"internal error: {type(e).__name__}: {e} (run with -vv for details)")

    return wrapper  # type: ignore[return-value]


def _load_config(path: Path) -> config_mod.Config:
    return config_mod.load(path)


def _state(config: config_mod.Config) -> SqliteStore:
    """The state file of a command that sends: one line when this creates it."""
    store = SqliteStore(config.state_path)
    if store.created:
        click.echo(
            f"newsletter: {config.state_path}: a new, empty state database (newsletter.state)",
            err=True,
        )
    return store


def _day(value: dt.datetime | None) -> dt.date | None:
    return value.date() if value else None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", help="Show the version and exit.")
@click.option(
    "-v", "--verbose", count=True, help="Log what happens (-v info, -vv debug) to stderr."
)
def cli(verbose: int) -> None:
    """Get trending papers in your email inbox: a self-hosted newsletter of the
    Hugging Face Daily Papers, configured in one YAML file."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s %(message)s", stream=sys.stderr)


@cli.command()
@config_option
@click.option(
    "--connect",
    is_flag=True,
    help="Also log in to the SMTP server as a send would (then QUIT, sending nothing) "
    "and fetch one source URL.",
)
@handles_errors
def check(config_path: Path, connect: bool) -> None:
    """Preflight: validate the config file and what a run will need.

    Besides the file: the signing key ($NEWSLETTER_SECRET or newsletter.secret_env, set and
    at least 32 bytes), the SMTP password's variable when smtp.username is set, that the
    state file (or its folder) is writable, and sample digests rendered through the
    templates. Prints one line per problem and exits 2, or a one-line summary and exits 0;
    a template file with a name that is never used is a warning. --connect adds one line
    for the SMTP server and one for a source: exit 1 when one cannot be reached, 2 when it
    refuses the configuration (login, certificate); the higher code wins.

    Example: NEWSLETTER_SECRET=... newsletter check -c newsletter.yaml --connect
    """
    config = _load_config(config_path)
    problems = preflight.problems(config)
    for line in preflight.warnings(config):
        click.echo(f"warning: {line}", err=True)
    for line in problems:
        click.echo(line, err=True)
    code = EXIT_USAGE if problems else EXIT_OK
    if connect:
        for line, line_code in _connect_checks(config):
            click.echo(line, err=line_code != EXIT_OK)
            code = max(code, line_code)
    if not problems:
        subs = config.subscribers
        click.echo(
            f"{config_path}: ok: {len(config.topics)} topic{'s' if len(config.topics) != 1 else ''}, "
            f"{len(subs)} subscriber{'s' if len(subs) != 1 else ''}"
        )
    sys.exit(code)


def _connect_checks(config: config_mod.Config) -> Iterator[tuple[str, int]]:
    """One line and exit code for the SMTP server, then one for the first source."""
    try:
        settings = wiring.smtp_settings(config)
    except ConfigError:  # reported with the other problems
        yield (
            f"smtp: skipped: {config.smtp.host}:{config.smtp.port}: no password to log in with",
            EXIT_USAGE,
        )
    else:
        yield preflight.smtp_line(settings)
    with sources.open_sources(config.sources) as found:
        if not found:
            yield "sources: skipped: huggingface and arxiv are both disabled", EXIT_OK
            return
        report = sources.fetch_period(found[:1], sources.Period.day(_now().date()))
    for status in report.statuses:
        yield status.line(), EXIT_OK if status.ok else EXIT_FAILED


class _Date(click.DateTime):
    """YYYY-MM-DD; a date that does not exist (2026-02-30) is named as such."""

    def __init__(self) -> None:
        super().__init__(formats=["%Y-%m-%d"])

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            try:
                dt.date.fromisoformat(value.strip())
            except ValueError:
                self.fail(f"{value!r} is not a valid date (YYYY-MM-DD)", param, ctx)
        return super().convert(value, param, ctx)


DATE = _Date()

date_option = click.option(
    "--date",
    "date_",
    type=DATE,
    help="The daily list's date (YYYY-MM-DD, UTC). Default: the most recent day with papers.",
)
from_option = click.option(
    "--from",
    "from_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read a saved API response or papers page instead of the network.",
)


@cli.command()
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
    config = _load_config(config_path)
    _check_subscriber(config, subscriber)
    key = _signing_key(config, preview=True)
    sender = PreviewSender(out)
    now = _now()
    with (
        SqliteStore.scratch(config.state_path) as store,
        wiring.open_sources(config, from_file, store) as found,
    ):
        report = run_once(
            config,
            RunOptions(day=_day(date_), only=subscriber),
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


def _period(
    date_: dt.datetime | None, week: str | None, month: str | None, trending: bool
) -> sources.Period | None:
    given = [
        p
        for p, v in (
            ("--date", date_),
            ("--week", week),
            ("--month", month),
            ("--trending", trending),
        )
        if v
    ]
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} cannot be used together: pick one")
    try:
        if week:
            return sources.Period.parse("week", week)
        if month:
            return sources.Period.parse("month", month)
    except ValueError as e:
        raise click.UsageError(f"--{'week' if week else 'month'}: {e}") from None
    if trending:
        return sources.Period("trending")
    return sources.Period.day(date_.date()) if date_ else None


@cli.command()
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
    config = _load_config(config_path)
    _check_subscriber(config, subscriber)
    if test_to is not None and subscriber is None:
        raise click.UsageError("--test needs --subscriber: whose digest to send")
    # A test copy's links lead to the real page (which says it was a test): the real key.
    key = _signing_key(config, preview=dry_run)
    day = _day(date_) or _now().date()
    sender: Sender
    if dry_run:
        sender = PreviewSender(out)
    else:
        sender = SmtpSender(
            wiring.smtp_settings(config), records_deliveries=test_to is None, redirect_to=test_to
        )
    progress = _Progress()
    # A dry run or a test send reads the state but records nothing: a copy in memory.
    state = _state(config) if sender.records_deliveries else SqliteStore.scratch(config.state_path)
    with state as store, wiring.open_sources(config, from_file, store) as found:

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
                clock=_now,
            )

        with _graceful_stop(sender):
            report = (
                logged(store, "send", _now, send_once) if sender.records_deliveries else send_once()
            )
        warning = silence_warning(store, config, _now()) if sender.records_deliveries else None
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


def _signing_key(config: config_mod.Config, *, preview: bool) -> bytes:
    """The key that signs unsubscribe links; a preview's is throwaway when it lacks one.

    A key that is missing or too short is refused (exit 2) by every command that signs
    links someone will use.
    """
    env = config.newsletter.secret_env
    key = tokens.key_from_env(env, preview=preview)
    if key is None:
        problem = tokens.key_problem(env) or f"${env} is not usable"
        raise ConfigError(str(config.path), [f"{config.path}: newsletter.secret_env: {problem}"])
    return key


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


@cli.command()
@config_option
@date_option
@click.option("--week", metavar="YYYY-Www", help="An ISO week's papers, e.g. 2025-W40.")
@click.option("--month", metavar="YYYY-MM", help="A month's papers, e.g. 2025-10.")
@click.option("--trending", is_flag=True, help="The papers trending now.")
@from_option
@click.option(
    "--replay",
    is_flag=True,
    help="Parse the responses kept in the state database again instead of the network.",
)
@handles_errors
def fetch(
    config_path: Path,
    date_: dt.datetime | None,
    week: str | None,
    month: str | None,
    trending: bool,
    from_file: Path | None,
    replay: bool,
) -> None:
    """Fetch papers into the state database and print them (id, upvotes, title).

    Prints one status line per source and exits 1 if any source failed.
    """
    period = _period(date_, week, month, trending)
    config = _load_config(config_path)
    with SqliteStore(config.state_path) as store:
        with wiring.open_sources(config, from_file, store, replay=replay) as found:
            now = _now()
            if period is None:
                day = sources.latest_day(found, now.date())
                if day is None:
                    click.echo("no papers in the last week")
                    return
                period = sources.Period.day(day)
            report = sources.fetch_period(found, period)
        store.add_papers(report.papers, now)
        if period.kind == "date":
            day = period.days()[0]
            for status in report.statuses:
                if not status.skipped:
                    store.mark_fetched(status.name, day, status.papers, now, error=status.error)
    width = max((len(p.id) for p in report.papers), default=10)
    click.echo(f"{'id':<{width}}  {'upvotes':>7}  title")
    for p in report.papers:
        click.echo(f"{p.id:<{width}}  {p.upvotes:>7}  {p.title}")
    for status in report.statuses:
        click.echo(status.line(), err=not status.ok)
    if not report.ok:
        sys.exit(EXIT_FAILED)


def _check_subscriber(config: config_mod.Config, address: str | None) -> None:
    if address is None:
        return
    if not any(s.email.casefold() == address.casefold() for s in config.subscribers):
        raise click.UsageError(f"no subscriber {address!r} in {config.path}")


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        abort("interrupted", 130)


# -- scheduled operation ----------------------------------------------------------------


@cli.command()
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
    config = _load_config(config_path)
    key = _signing_key(config, preview=False)
    now = _now()
    grace = dt.timedelta(minutes=config.schedule.grace_minutes)
    groups = schedule.groups_of(config)
    due = schedule.due_now(groups, config.schedule.weekly_on, now, grace)
    unfinished = schedule.unfinished(config, now.date())
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
        _state(config) as store,
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


@cli.command()
@config_option
@handles_errors
def serve(config_path: Path) -> None:
    """Run as a service: send on schedule and answer one-click unsubscribes.

    One job per group of subscribers sharing cadence, send time and timezone; what today's
    run left unsent is resumed at the start and every 15 minutes. SIGHUP
    reloads the config file (a broken file is reported and the old one kept); SIGTERM or
    SIGINT finishes the message in flight and exits 0.
    """
    config = _load_config(config_path)
    key = _signing_key(config, preview=False)
    wiring.smtp_settings(config)  # a missing password is a config error now, not at 08:00
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("newsletter").setLevel(logging.INFO)  # a daemon says what it does
    try:
        daemon = schedule.Daemon(
            config_path, config, key, echo=lambda line: click.echo(line, err=True)
        )
    except OSError as e:
        where = f"{config.server.host}:{config.server.port}"
        hint = (
            "server.port: cannot listen on {}: {} (another `newsletter serve`? "
            "set server.port to a free port)"
            if e.errno == errno.EADDRINUSE
            else "server.host: cannot listen on {}: {}"
        )
        line = f"{config.path}: {hint.format(where, e.strerror or e)}"
        raise ConfigError(str(config.path), [line]) from e
    with _state(config):  # a state file that cannot be opened: said now, not at 08:00
        pass
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, daemon.on_signal)
    daemon.start()
    host, port = daemon.web.address
    click.echo(f"serving: unsubscribe endpoint on http://{host}:{port}/unsubscribe/", err=True)
    for job_id, when in daemon.scheduler.next_runs():
        click.echo(
            f"  next {job_id}: {when:%Y-%m-%d %H:%M:%S %Z}" if when else f"  {job_id}: paused",
            err=True,
        )
    daemon.wait()


@cli.command()
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
    config = _load_config(config_path)
    now = _now()
    with SqliteStore(config.state_path, read_only=True) as store:
        history = store.last_runs(runs)
        warning = silence_warning(store, config, now)
        states = store.states()
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
    groups = schedule.groups_of(config)
    for group, when in schedule.next_fire_times(groups, config.schedule.weekly_on, now):
        members = sum(1 for s in groups[group] if s.key not in states)  # who will be mailed
        click.echo(
            f"  {when:%Y-%m-%d %H:%M %Z}  {group.job_id}  ({members} subscriber{'s' if members != 1 else ''})"
        )
    kinds = Counter(states.get(s.email.casefold(), ("active", ""))[0] for s in config.subscribers)
    click.echo(
        f"subscribers: {kinds['active']} active, {kinds['unsubscribed']} unsubscribed, "
        f"{kinds['suppressed']} bounced"
    )
    if warning:
        click.echo(f"warning: {warning}", err=True)


@cli.group()
def subscribers() -> None:
    """List subscribers' state; unsubscribe someone, or resubscribe someone who
    unsubscribed or bounced."""


@subscribers.command("list")
@config_option
@handles_errors
def subscribers_list(config_path: Path) -> None:
    """Each subscriber's state (active, unsubscribed, suppressed), last digest and topics."""
    config = _load_config(config_path)
    with SqliteStore(config.state_path, read_only=True) as store:
        states = store.states()
        last = store.last_digest_days()
    width = max((len(s.email) for s in config.subscribers), default=5)
    click.echo(f"{'email':<{width}}  {'state':<12}  {'last digest':<11}  topics")
    for s in config.subscribers:
        key = s.email.casefold()
        state, reason = states.get(key, ("active", ""))
        day = last.get(key)
        click.echo(
            f"{s.email:<{width}}  {state:<12}  {day.isoformat() if day else '-':<11}  {', '.join(s.topics)}"
        )
        if reason and state == "suppressed":
            click.echo(f"{'':<{width}}    ({reason})")
    configured = {s.email.casefold() for s in config.subscribers}
    for key, (state, _) in sorted(states.items()):
        if key not in configured:
            click.echo(f"{key:<{width}}  {state:<12}  {'-':<11}  (not in {config.path})")


@subscribers.command("unsubscribe")
@config_option
@click.argument("email")
@handles_errors
def subscribers_unsubscribe(config_path: Path, email: str) -> None:
    """Send EMAIL no more digests (e.g. after an unsubscribe request by email).

    The counterpart of resubscribe; the address may stay in the config file.

    Example: newsletter subscribers unsubscribe -c newsletter.yaml ada@example.org
    """
    config = _load_config(config_path)
    with SqliteStore(config.state_path) as store:
        state, reason = store.states().get(email.casefold(), ("active", ""))
        if state != "unsubscribed":
            store.set_state(email, "unsubscribed", "by the operator", _now())
    if state == "unsubscribed":
        click.echo(f"{email}: was already unsubscribed ({reason})")
    elif state == "suppressed":
        click.echo(f"{email}: unsubscribed (it was suppressed after a bounce: {reason})")
    else:
        click.echo(f"{email}: unsubscribed; `newsletter subscribers resubscribe` undoes it")
    if email.casefold() not in {s.email.casefold() for s in config.subscribers}:
        click.echo(f"note: {email} is not in {config.path}", err=True)


@subscribers.command("resubscribe")
@config_option
@click.argument("email")
@handles_errors
def subscribers_resubscribe(config_path: Path, email: str) -> None:
    """Let EMAIL receive digests again after an unsubscribe or a bounce."""
    config = _load_config(config_path)
    with SqliteStore(config.state_path) as store:
        cleared = store.clear_state(email)
    if cleared:
        click.echo(f"{email}: active again")
    else:
        click.echo(f"{email}: was neither unsubscribed nor suppressed")
    if email.casefold() not in {s.email.casefold() for s in config.subscribers}:
        click.echo(
            f"note: {email} is not in {config.path}: add it there to send it digests", err=True
        )
