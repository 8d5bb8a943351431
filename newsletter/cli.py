"""The ``newsletter`` command. Thin: parse options, wire the stages, report.

Every failure goes through ``abort()``: one line naming the file, key, URL or recipient,
and an exit code (0 success, 1 a run failed, 2 usage or configuration error). Only this
module configures logging handlers.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from newsletter import __version__, render, sources, unsubscribe
from newsletter import config as config_mod
from newsletter.errors import ConfigError, NewsletterError, TemplateError
from newsletter.pipeline import run_once
from newsletter.send import PreviewSender
from newsletter.store import SqliteStore

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
        except click.ClickException:
            raise  # usage errors: click prints them and exits 2
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


def _day(value: dt.datetime | None) -> dt.date | None:
    return value.date() if value else None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@contextmanager
def _sources(
    config: config_mod.Config,
    from_file: Path | None,
    store: SqliteStore,
    *,
    replay: bool = False,
) -> Iterator[list[sources.Source]]:
    """The configured sources (responses kept in ``store``), or the one ``--from`` file."""
    if from_file is not None:
        yield [sources.FileSource(from_file)]
        return
    with sources.open_sources(config.sources, store=store, replay=replay) as found:
        if not found:
            raise ConfigError(
                str(config.path),
                [
                    f"{config.path}: sources: both huggingface and arxiv are disabled "
                    "and no --from FILE was given"
                ],
            )
        yield found


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
@handles_errors
def check(config_path: Path) -> None:
    """Validate the config file and render a sample digest through the templates.

    Prints one FILE:LINE: key.path: message line per problem and exits 2, or a one-line
    summary and exits 0.
    """
    config = _load_config(config_path)
    render.check_templates(config.templates_path)
    subs = config.subscribers
    click.echo(
        f"{config_path}: ok: {len(config.topics)} topic{'s' if len(config.topics) != 1 else ''}, "
        f"{len(subs)} subscriber{'s' if len(subs) != 1 else ''}"
    )


date_option = click.option(
    "--date",
    "date_",
    type=click.DateTime(formats=["%Y-%m-%d"]),
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

    Records nothing as sent: the same digests can be previewed again and again.
    """
    config = _load_config(config_path)
    _check_subscriber(config, subscriber)
    key = unsubscribe.key_from_env(config.newsletter.secret_env, preview=True)
    assert key is not None  # a preview always gets one, throwaway if need be
    sender = PreviewSender(out)
    with SqliteStore(config.state_path) as store, _sources(config, from_file, store) as found:
        report = run_once(
            config,
            source=found,
            store=store,
            sender=sender,
            now=_now(),
            key=key,
            day=_day(date_),
            only=subscriber,
        )
    for line in report.source_errors:
        click.echo(line, err=True)
    if report.fetch_failed:
        abort("no source could be fetched: nothing to preview")
    if report.day is None:
        click.echo("No papers found in the last week: nothing to preview.")
        return
    click.echo(
        f"{report.day}: {report.papers_fetched} papers fetched, "
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
        with _sources(config, from_file, store, replay=replay) as found:
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
