"""The ``newsletter`` command. Thin: parse options, wire the stages, report.

Every failure goes through ``abort()``: one line naming the file, key, URL or recipient,
and an exit code (0 success, 1 a run failed, 2 usage or configuration error). Only this
module configures logging handlers.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from newsletter import __version__, message, render, sources, unsubscribe
from newsletter import config as config_mod
from newsletter.errors import ConfigError, NewsletterError, TemplateError
from newsletter.pipeline import run_once
from newsletter.send import PreviewSender
from newsletter.sources.http import HttpClient
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


def _source(config: config_mod.Config, from_file: Path | None) -> sources.Source:
    if from_file is not None:
        return sources.FileSource(from_file)
    hf = config.sources.huggingface
    if not hf.enabled:
        raise ConfigError(
            str(config.path),
            [f"{config.path}: sources.huggingface.enabled is false and no --from FILE was given"],
        )
    return sources.HuggingFaceApi(hf.base_url, HttpClient(timeout=hf.timeout, retries=hf.retries))


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
    message.load_sender(config)  # a DKIM key that cannot sign is a configuration error
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
    source = _source(config, from_file)
    sender = PreviewSender(out)
    with SqliteStore(config.state_path) as store:
        report = run_once(
            config,
            source=source,
            store=store,
            sender=sender,
            now=_now(),
            key=key,
            day=_day(date_),
            only=subscriber,
        )
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


@cli.command()
@config_option
@date_option
@from_option
@handles_errors
def fetch(config_path: Path, date_: dt.datetime | None, from_file: Path | None) -> None:
    """Fetch one day's papers into the state database and print them."""
    config = _load_config(config_path)
    source = _source(config, from_file)
    day = _day(date_) or source.latest_day(_now().date())
    if day is None:
        click.echo(f"{source.name}: no papers in the last week")
        return
    papers = sources.fetch(source, [day])
    with SqliteStore(config.state_path) as store:
        now = _now()
        store.add_papers(papers, now)
        store.mark_fetched(source.name, day, len(papers), now)
    width = max((len(p.id) for p in papers), default=10)
    click.echo(f"{'id':<{width}}  {'upvotes':>7}  title")
    for p in sorted(papers, key=lambda p: (-p.upvotes, p.id)):
        click.echo(f"{p.id:<{width}}  {p.upvotes:>7}  {p.title}")
    click.echo(f"{source.name}: ok: {len(papers)} papers for {day}")


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
