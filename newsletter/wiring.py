"""The real edges a config names: the state (a SQLite file or a PostgreSQL database), the
SMTP settings (password from the environment) and the sources (or the one ``--from`` file). The commands (``cli``) and the ``serve`` daemon
(``schedule``) wire the stages with these, the same way.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Iterator, MutableSet, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.config import Config
from newsletter.errors import ConfigError

if TYPE_CHECKING:
    from newsletter import sources
    from newsletter.deliver import SmtpSettings
    from newsletter.inbound.imap import Pass
    from newsletter.sources.http import ResponseStore
    from newsletter.store import SqliteStore
    from newsletter.store.postgres import PostgresStore


log = logging.getLogger(__name__)


def state_password(config: Config) -> str | None:
    """The PostgreSQL password from ``newsletter.state_password_env``; None: libpq's own."""
    return os.environ.get(config.newsletter.state_password_env) or None


def open_state(config: Config, *, read_only: bool = False) -> SqliteStore | PostgresStore:
    """The state ``newsletter.state`` names, opened (and brought up to date unless
    ``read_only``)."""
    from newsletter.store import open_store

    return open_store(config.state_location, read_only=read_only, password=state_password(config))


def scratch_state(config: Config) -> SqliteStore:
    """A copy of the state in memory: a preview, a dry run or a test send changes nothing."""
    from newsletter.store import scratch_store

    return scratch_store(config.state_location, password=state_password(config))


def password_problem(config: Config) -> str | None:
    """The one line for an SMTP login without its password in the environment, or None."""
    smtp = config.smtp
    if smtp.username and not os.environ.get(smtp.password_env):
        return (
            f"{config.path}: smtp.password_env: ${smtp.password_env} is not set "
            f"(smtp.username is {smtp.username!r})"
        )
    return None


def smtp_settings(config: Config) -> SmtpSettings:
    """What ``SmtpSender`` needs; a missing password is a ConfigError (exit 2)."""
    from newsletter.deliver import SmtpSettings, default_helo_name  # not for `check`

    smtp = config.smtp
    problem = password_problem(config)
    if problem is not None:
        raise ConfigError(str(config.path), [problem])
    password = os.environ.get(smtp.password_env) if smtp.username else None
    ca_file = str(config.base_dir / smtp.ca_file) if smtp.ca_file else None
    return SmtpSettings(
        host=smtp.host,
        port=smtp.port,
        security=smtp.security,
        username=smtp.username,
        password=password,
        connections=smtp.connections,
        rate_per_second=smtp.rate_per_second,
        timeout=smtp.timeout,
        max_retries=smtp.max_retries,
        retry_backoff=smtp.retry_backoff,
        ca_file=ca_file,
        connect_timeout=smtp.connect_timeout,
        helo_name=smtp.helo_name or default_helo_name(config.newsletter.from_address),
    )


def imap_password(config: Config) -> str:
    """The IMAP password from the environment; missing: a ConfigError (exit 2, 75 for inbound)."""
    imap = config.inbound.imap
    if imap is None:
        raise ConfigError(str(config.path), [f"{config.path}: inbound.imap: not configured"])
    password = os.environ.get(imap.password_env)
    if not password:
        raise ConfigError(
            str(config.path),
            [
                f"{config.path}: inbound.imap.password_env: ${imap.password_env} is not set "
                f"(inbound.imap.username is {imap.username!r})"
            ],
        )
    return password


def read_bounce_mailbox(
    config: Config,
    keys: Sequence[bytes],
    clock: Callable[[], dt.datetime],
    *,
    reported: MutableSet[str] | None = None,
) -> Pass:
    """One pass over ``inbound.imap``'s folder, each message handled against the state file
    (``serve``'s poll and ``newsletter inbound --imap``)."""
    from newsletter.inbound.handle import Rules, handle
    from newsletter.inbound.imap import read_mailbox

    imap = config.inbound.imap
    if imap is None:
        raise ConfigError(str(config.path), [f"{config.path}: inbound.imap: not configured"])
    password = imap_password(config)
    rules = Rules.of(config)
    with open_state(config) as store:

        def one(raw: bytes) -> None:
            handled = handle(raw, (), store=store, keys=keys, rules=rules, now=clock())
            log.info("inbound.handled %s", handled.line())

        return read_mailbox(imap, password, one, reported=reported)


@contextmanager
def open_sources(
    config: Config,
    from_file: Path | None,
    store: ResponseStore,
    *,
    replay: bool = False,
) -> Iterator[list[sources.Source]]:
    """The configured sources (responses kept in ``store``), or the one ``--from`` file."""
    from newsletter import sources  # the HTML parsers: only for commands that fetch

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
