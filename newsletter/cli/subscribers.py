"""``newsletter subscribers``: list their state; unsubscribe or resubscribe someone."""

from __future__ import annotations

from pathlib import Path

import click

from newsletter.cli.common import config_option, handles_errors, load_config, now_utc


@click.group()
def subscribers() -> None:
    """List subscribers' state; unsubscribe someone, or resubscribe someone who
    unsubscribed or bounced."""


@subscribers.command("list")
@config_option
@handles_errors
def subscribers_list(config_path: Path) -> None:
    """Each subscriber's state (active, unsubscribed, suppressed), last digest and topics."""
    from newsletter.store import SqliteStore

    config = load_config(config_path)
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
    from newsletter.store import SqliteStore

    config = load_config(config_path)
    with SqliteStore(config.state_path) as store:
        state, reason = store.states().get(email.casefold(), ("active", ""))
        if state != "unsubscribed":
            store.set_state(email, "unsubscribed", "by the operator", now_utc())
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
    from newsletter.store import SqliteStore

    config = load_config(config_path)
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
