"""What every command shares: one ``abort()`` for every failure, the error handling, the
options used by several commands, and reading the config, the key and the state.

Nothing here imports a stage at the top: ``newsletter --help`` must stay light.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import re
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from newsletter import collector
from newsletter.errors import ConfigError, NewsletterError, TemplateError
from newsletter.web import tokens

if TYPE_CHECKING:
    from newsletter import config as config_mod
    from newsletter.store import SqliteStore
    from newsletter.store.postgres import PostgresStore

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
F = TypeVar("F", bound=Callable[..., Any])


def abort(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"newsletter: {message}", err=True)
    sys.exit(code)


def _exit_code(error: NewsletterError) -> int:
    return EXIT_USAGE if isinstance(error, ConfigError | TemplateError) else EXIT_FAILED


def _default_config() -> str:
    from newsletter import config as config_mod

    return config_mod.default_path()


def config_option(fn: F) -> F:
    # config.py (and pydantic with it) loads when a command runs, not for --help: the help
    # text spells out config.ENV_VAR and config.DEFAULT_PATH (tests/test_help.py checks it).
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=_default_config,
        show_default="$NEWSLETTER_CONFIG, then ./newsletter.yaml",
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


def load_config(path: Path) -> config_mod.Config:
    from newsletter import config as config_mod

    # The config lives as long as the command: the cycle collector need not walk its
    # objects (~150,000 for 20,000 subscribers) again at every collection of a run. What is
    # garbage now is collected first (a few ms): frozen, it would never be.
    gc.collect()
    config = config_mod.load(path)
    gc.freeze()
    collector.trim()  # what reading the file took and no longer holds
    return config


def open_state(config: config_mod.Config) -> SqliteStore | PostgresStore:
    """The state of a command that writes it: one line when this creates it."""
    from newsletter import wiring

    store = wiring.open_state(config)
    if store.created:
        click.echo(
            f"newsletter: {store.path}: a new, empty state database (newsletter.state)",
            err=True,
        )
    return store


def date_of(value: dt.datetime | None) -> dt.date | None:
    return value.date() if value else None


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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


def signing_key(config: config_mod.Config, *, preview: bool) -> bytes:
    """The key that signs the links in the emails (the first of ``signing_keys``)."""
    return signing_keys(config, preview=preview)[0]


def signing_keys(config: config_mod.Config, *, preview: bool) -> tuple[bytes, ...]:
    """The keys of ``newsletter.secret_env``: the first signs links, every one verifies them;
    a preview's is throwaway when it lacks them.

    A key that is missing or too short is refused (exit 2) by every command that signs
    links someone will use.
    """
    env = config.newsletter.secret_env
    keys = tokens.keys_from_env(env, preview=preview)
    if keys is None:
        problem = tokens.key_problem(env) or f"${env} is not usable"
        raise ConfigError(str(config.path), [f"{config.path}: newsletter.secret_env: {problem}"])
    return keys


def check_subscriber(config: config_mod.Config, address: str | None) -> None:
    """``--subscriber``: an address of the file's, or of a reader in the state."""
    if address is None:
        return
    if any(s.email.casefold() == address.casefold() for s in config.subscribers):
        return
    from newsletter import wiring

    if config.state_url is not None or config.state_path.exists():
        with wiring.open_state(config, read_only=True) as store:
            if store.subscriber_by_email(address) is not None:
                return
    raise click.UsageError(f"no subscriber {address!r} in {config.path} or {config.state_location}")
