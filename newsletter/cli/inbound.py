"""``newsletter inbound``: one bounce, complaint or mailto unsubscribe from standard input (an
MTA's pipe, ``.forward``, procmail), or one pass over the IMAP mailbox (``--imap``, for cron).

Exit codes are the MTA's: 0 whenever the message was understood or ignored (so the MTA never
bounces a bounce), 75 (EX_TEMPFAIL) for any failure of ours (a bad config, an unwritable
state, a mailbox that cannot be read), so the MTA keeps the message and tries again.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from newsletter.cli.common import config_option, load_config, now_utc, signing_keys
from newsletter.errors import ConfigError, NewsletterError

if TYPE_CHECKING:
    from newsletter.config import Config
    from newsletter.inbound.handle import Handled

log = logging.getLogger(__name__)

EX_TEMPFAIL = 75  # sysexits.h: the MTA queues the message and tries again later
#: More than any report or unsubscribe message; a bigger input is not read further.
MAX_MESSAGE_BYTES = 50 * 1024 * 1024

F = TypeVar("F", bound=Callable[..., Any])


def _tempfail(fn: F) -> F:
    """Every failure of ours: its line(s) on stderr, exit 75."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except ConfigError as e:
            for line in e.problems:
                click.echo(line, err=True)
        except NewsletterError as e:
            click.echo(f"newsletter: {e}", err=True)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"newsletter: {where}{e.strerror or e}", err=True)
        except Exception as e:  # a bug: still a temporary failure, the MTA keeps the message
            log.debug("internal error", exc_info=True)
            click.echo(f"newsletter: internal error: {type(e).__name__}: {e}", err=True)
        sys.exit(EX_TEMPFAIL)

    return wrapper  # type: ignore[return-value]


@click.command()
@config_option
@click.option(
    "--envelope-to",
    "envelope_to",
    metavar="ADDRESS",
    multiple=True,
    help="The address the MTA delivered the message to (Postfix: ${original_recipient}).",
)
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print one JSON object: {"kind", "permanent", "recipients", "status", "action"}.',
)
@click.option(
    "--imap",
    is_flag=True,
    help="Read the inbound.imap mailbox once instead of standard input (for cron).",
)
@_tempfail
def inbound(
    config_path: Path, envelope_to: tuple[str, ...], dry_run: bool, as_json: bool, imap: bool
) -> None:
    """Handle a bounce, a spam complaint or a mailto unsubscribe.

    Reads one raw message on standard input. A permanent failure of the address makes the
    subscriber bounced; other failures are counted (inbound.soft_bounces within
    inbound.soft_days make it bounced); a complaint makes it complained; a message to an
    unsubscribe+TOKEN address unsubscribes. Exit 0 when the message was understood or
    ignored, 75 (temporary failure: the MTA tries again) on any failure of ours.

    Example: newsletter inbound -c /etc/newsletter.yaml --envelope-to bounces+TOKEN@example.org < report.eml
    """
    from newsletter import wiring

    config = load_config(config_path)
    keys = _keys(config)
    if imap:
        if dry_run or envelope_to or as_json:
            raise click.UsageError("--imap takes no --envelope-to, --dry-run or --json")
        done = wiring.read_bounce_mailbox(config, keys, now_utc)
        click.echo(f"handled {done.handled} message{'s' if done.handled != 1 else ''}")
        for key, why in done.failed.items():
            click.echo(f"newsletter: message {key} left in the mailbox: {why}", err=True)
        if done.failed:
            sys.exit(EX_TEMPFAIL)
        return
    raw = sys.stdin.buffer.read(MAX_MESSAGE_BYTES + 1)
    if len(raw) > MAX_MESSAGE_BYTES:
        raw = raw[:MAX_MESSAGE_BYTES]  # a report's headers and status come first
    handled = _handle(config, raw, envelope_to, keys, dry_run)
    if as_json:
        click.echo(json.dumps(handled.as_json(), ensure_ascii=False))
    else:
        click.echo(("(dry run) " if dry_run else "") + handled.line())


def _keys(config: Config) -> tuple[bytes, ...]:
    """The keys tokens verify with (every key of ``newsletter.secret_env``); with no bounce
    address no token of ours exists."""
    if config.smtp.bounce_address is None:
        return ()
    return signing_keys(config, preview=False)


def _handle(
    config: Config, raw: bytes, envelope_to: tuple[str, ...], keys: tuple[bytes, ...], dry_run: bool
) -> Handled:
    from newsletter import wiring
    from newsletter.inbound.handle import Rules, handle

    rules = Rules.of(config)
    with wiring.open_state(config, read_only=dry_run) as store:
        return handle(
            raw, envelope_to, store=store, keys=keys, rules=rules, now=now_utc(), dry_run=dry_run
        )
