"""``newsletter subscribers``: list them; unsubscribe or resubscribe someone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli.common import config_option, handles_errors, load_config, now_utc

if TYPE_CHECKING:
    from newsletter.config import Config
    from newsletter.models import SubscriberRecord
    from newsletter.store import SqliteStore


@click.group()
def subscribers() -> None:
    """List subscribers' state; unsubscribe someone, or resubscribe someone who
    unsubscribed or bounced."""


@subscribers.command("list")
@config_option
@handles_errors
def subscribers_list(config_path: Path) -> None:
    """Every subscriber: status, source (config, web, cli, import), last digest, topics.

    The config file's subscribers first, then the readers in the state file.

    Example: newsletter subscribers list -c newsletter.yaml
    """
    from newsletter import roster
    from newsletter.store import SqliteStore

    config = load_config(config_path)
    now = now_utc()
    with SqliteStore(config.state_path, read_only=True) as store:
        who = roster.load(store, config.subscriber_models(), now, write=False)
        rows = {r.key: r for r in store.subscribers()}
        last = store.last_digest_days()
    lines: list[tuple[str, str, str, str, str]] = []
    held = {s.key: status for s, status in who.held}
    for sub in config.subscriber_models():
        row = rows.pop(sub.key, None)
        status = held.get(sub.key, "active")
        source = "config" if row is None or row.source == "config" else f"config+{row.source}"
        lines.append((sub.email, status, source, _day(last.get(sub.key)), ", ".join(sub.topics)))
    for row in rows.values():
        topics = ", ".join(row.topics)
        if row.source == "config":
            topics = f"(not in {config.path})"
        lines.append((row.email, row.status, row.source, _day(last.get(row.key)), topics))
    width = max((len(line[0]) for line in lines), default=5)
    click.echo(f"{'email':<{width}}  {'status':<12}  {'source':<11}  {'last digest':<11}  topics")
    for email, status, source, day, topics in lines:
        click.echo(f"{email:<{width}}  {status:<12}  {source:<11}  {day:<11}  {topics}")


def _day(day: dt.date | None) -> str:
    return day.isoformat() if day else "-"


def _row_for(store: SqliteStore, config: Config, email: str) -> SubscriberRecord | None:
    """The address's row; one of the file's gets its row now if it has none yet."""
    row = store.subscriber_by_email(email)
    if row is None:
        subs = [s for s in config.subscriber_models() if s.key == email.strip().casefold()]
        row = store.sync_file_subscribers(subs, now_utc()).get(email.strip().casefold())
    return row


@subscribers.command("unsubscribe")
@config_option
@click.argument("email")
@handles_errors
def subscribers_unsubscribe(config_path: Path, email: str) -> None:
    """Send EMAIL no more digests (e.g. after an unsubscribe request by email).

    The counterpart of resubscribe; the address may stay in the config file.

    Example: newsletter subscribers unsubscribe -c newsletter.yaml ada@example.org
    """
    from newsletter.models import SubscriberRecord
    from newsletter.store import SqliteStore

    config = load_config(config_path)
    now = now_utc()
    with SqliteStore(config.state_path) as store:
        row = _row_for(store, config, email)
        if row is None:  # nobody's: kept unsubscribed, so a later sign-up or import asks first
            store.add_subscriber(
                SubscriberRecord(
                    email=email.strip(),
                    topics=(),
                    status="unsubscribed",
                    source="cli",
                    reason="by the operator",
                ),
                now=now,
            )
            status, reason = "active", ""
        else:
            status, reason = row.status, row.reason
            if status != "unsubscribed":
                store.set_subscriber_status(row.id, "unsubscribed", "by the operator", now)
    if status == "unsubscribed":
        click.echo(f"{email}: was already unsubscribed ({reason})")
    elif status in ("bounced", "complained"):
        click.echo(f"{email}: unsubscribed (it was {status}: {reason})")
    else:
        click.echo(f"{email}: unsubscribed; `newsletter subscribers resubscribe` undoes it")
    if row is None:
        click.echo(f"note: {email} is not in {config.path}", err=True)


@subscribers.command("resubscribe")
@config_option
@click.argument("email")
@handles_errors
def subscribers_resubscribe(config_path: Path, email: str) -> None:
    """Let EMAIL receive digests again after an unsubscribe, a pause, a bounce or a complaint.

    Example: newsletter subscribers resubscribe -c newsletter.yaml ada@example.org
    """
    from newsletter.store import SqliteStore

    config = load_config(config_path)
    with SqliteStore(config.state_path) as store:
        row = _row_for(store, config, email)
        held = row is not None and row.status in roster_held()
        if row is not None and held:
            store.set_subscriber_status(row.id, "active", "resubscribed by the operator", now_utc())
    if held:
        click.echo(f"{email}: active again")
    elif row is not None and row.status == "pending":
        click.echo(
            f"{email}: has not confirmed yet; `newsletter subscribers add --confirmed` adds them"
        )
    else:
        click.echo(f"{email}: was neither unsubscribed, paused, bounced nor complained")
    if row is None or (
        row.source == "config"
        and email.strip().casefold() not in {s.key for s in config.subscriber_models()}
    ):
        click.echo(
            f"note: {email} is not in {config.path}: add it there to send it digests", err=True
        )


def roster_held() -> tuple[str, ...]:
    from newsletter import roster

    return roster.HELD
