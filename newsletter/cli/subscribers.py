"""``newsletter subscribers``: list, add, import, export, remove; unsubscribe or resubscribe.

Readers the operator adds (``add``, ``import``) are rows of the state file with source
``cli`` or ``import``. Without ``--confirmed`` each is pending and gets the confirmation
email the sign-up page sends (``compose.transactional``), over the configured SMTP server:
the link leads to ``serve``'s confirm page, so that needs ``signup.enabled``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli.common import (
    EXIT_USAGE,
    abort,
    config_option,
    handles_errors,
    load_config,
    now_utc,
    open_state,
)

if TYPE_CHECKING:
    from newsletter.cli.subscriber_csv import Row
    from newsletter.config import Config
    from newsletter.deliver.events import Outcome
    from newsletter.models import Outgoing, SubscriberRecord, SubscriberSource
    from newsletter.store import Store


@click.group()
def subscribers() -> None:
    """List, add, import, export and remove readers; unsubscribe someone, or resubscribe
    someone who unsubscribed or bounced."""


@subscribers.command("list")
@config_option
@handles_errors
def subscribers_list(config_path: Path) -> None:
    """Every subscriber: status, source (config, web, cli, import), bounces and spam
    complaints (since the last resubscribe), last digest, topics.

    The config file's subscribers first, then the readers in the state file.

    Example: newsletter subscribers list -c newsletter.yaml
    """
    from newsletter import roster, wiring

    config = load_config(config_path)
    now = now_utc()
    with wiring.open_state(config, read_only=True) as store:
        who = roster.load(store, config.subscriber_models(), now, write=False)
        rows = {r.key: r for r in store.subscribers()}
        last = store.last_digest_days()
        came_back = store.inbound_counts()

    def counts(row: SubscriberRecord | None) -> tuple[int, int]:
        got = came_back.get(row.id) if row is not None else None
        return (got["hard"] + got["soft"], got["complaint"]) if got else (0, 0)

    lines: list[tuple[str, str, tuple[int, int], str, str, str]] = []
    held = {s.key: status for s, status in who.held}
    for sub in config.subscriber_models():
        row = rows.pop(sub.key, None)
        status = held.get(sub.key, "active")
        source = "config" if row is None or row.source == "config" else f"config+{row.source}"
        lines.append(
            (sub.email, status, counts(row), source, _day(last.get(sub.key)), ", ".join(sub.topics))
        )
    for row in rows.values():
        topics = ", ".join(row.topics)
        if row.source == "config":
            topics = f"(not in {config.path})"
        lines.append(
            (row.email, row.status, counts(row), row.source, _day(last.get(row.key)), topics)
        )
    width = max((len(line[0]) for line in lines), default=5)
    click.echo(
        f"{'email':<{width}}  {'status':<12}  {'source':<11}  {'bounces':>7}  {'complaints':>10}  "
        f"{'last digest':<11}  topics"
    )
    for email, status, (bounces, complaints), source, day, topics in lines:
        click.echo(
            f"{email:<{width}}  {status:<12}  {source:<11}  {bounces:>7}  {complaints:>10}  "
            f"{day:<11}  {topics}"
        )


def _day(day: dt.date | None) -> str:
    return day.isoformat() if day else "-"


def _row_for(store: Store, config: Config, email: str) -> SubscriberRecord | None:
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
    from newsletter import wiring
    from newsletter.models import SubscriberRecord

    config = load_config(config_path)
    now = now_utc()
    with wiring.open_state(config) as store:
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
    from newsletter import wiring

    config = load_config(config_path)
    with wiring.open_state(config) as store:
        row = _row_for(store, config, email)
        held = row is not None and row.status in roster_held()
        if row is not None and held:
            store.set_subscriber_status(row.id, "active", "resubscribed by the operator", now_utc())
            store.clear_inbound(row.id)  # its bounce and complaint counts start again
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


# -- add, import, export, remove ----------------------------------------------------------------


@subscribers.command("add")
@config_option
@click.argument("email")
@click.option(
    "--topics",
    required=True,
    help="The topics' slugs (as under topics: in the config), separated by commas.",
)
@click.option("--name", help="How the digest greets them (default: no name).")
@click.option(
    "--cadence",
    type=click.Choice(["daily", "weekly"]),
    default="daily",
    show_default=True,
    help="How often they get a digest.",
)
@click.option(
    "--confirmed",
    is_flag=True,
    help="They agreed already: active now, no confirmation email.",
)
@click.option(
    "--again",
    is_flag=True,
    help="Add an address that was removed (`subscribers remove`), on purpose.",
)
@handles_errors
def subscribers_add(
    config_path: Path,
    email: str,
    topics: str,
    name: str | None,
    cadence: str,
    confirmed: bool,
    again: bool,
) -> None:
    """Add the reader EMAIL to the state file (source cli).

    Without --confirmed they are pending and get a confirmation email through the
    configured SMTP server (its link leads to serve's confirm page: signup.enabled);
    unconfirmed, they are purged after signup.confirm_hours and never get a digest. Their
    other settings come from signup.defaults. Adding a pending address again sends the
    email again.

    Example: newsletter subscribers add -c newsletter.yaml ada@example.org --topics llm,agents
    """
    from newsletter.cli.subscriber_csv import check
    from newsletter.errors import SubscriberExistsError, SubscriberRemovedError

    config = load_config(config_path)
    cells = {"email": email, "name": name or "", "topics": topics.replace(",", ";")}
    row, problems = check(0, cells | {"cadence": cadence}, sorted(config.topics))
    if row is None:
        options = {"email": "EMAIL", "name": "--name", "topics": "--topics"}
        field, _, message = problems[0].partition(": ")
        abort(f"{options.get(field, field)}: {message}", EXIT_USAGE)
    if row.email.casefold() in {s.key for s in config.subscriber_models()}:
        abort(f"{row.email} is in {config.path}: its settings come from there", EXIT_USAGE)
    mailer = None if confirmed else _Mailer(config)
    now = now_utc()
    with open_state(config) as store:
        existing = store.subscriber_by_email(row.email)
        if existing is not None and existing.status == "pending":
            record = store.update_preferences(
                existing.id, now=now, topics=row.topics, cadence=row.cadence, name=row.name
            )
            assert record is not None
            if confirmed:
                store.confirm_subscriber(record.id, now, None)
        else:
            try:
                record = store.add_subscriber(
                    _record(config, row, confirmed=confirmed, source="cli", now=now),
                    now=now,
                    again=again,
                )
            except SubscriberExistsError as e:
                abort(
                    f"{row.email}: already a subscriber ({e.status}); `subscribers resubscribe` "
                    "or their manage page changes that",
                    EXIT_USAGE,
                )
            except SubscriberRemovedError as e:
                abort(str(e), EXIT_USAGE)
        if mailer is not None:
            mailer.send(store, [record], now)
    if confirmed:
        click.echo(f"{row.email}: active ({', '.join(row.topics)}, {row.cadence})")
    else:
        click.echo(
            f"{row.email}: pending; a confirmation email went to them (the link works for "
            f"{config.signup.confirm_hours} hours)"
        )


def _record(
    config: Config, row: Row, *, confirmed: bool, source: SubscriberSource, now: dt.datetime
) -> SubscriberRecord:
    """A new row of ``row``'s reader; their other settings are ``signup.defaults``."""
    from newsletter.config import parse_time
    from newsletter.models import SubscriberRecord

    defaults = config.signup.defaults
    status = row.status or ("active" if confirmed else "pending")
    return SubscriberRecord(
        email=row.email,
        topics=row.topics,
        name=row.name,
        cadence=row.cadence,
        max_papers=defaults.max_papers,
        min_upvotes=defaults.min_upvotes,
        timezone=defaults.timezone,
        send_at=parse_time(defaults.send_at) if defaults.send_at else None,
        status=status,
        source=source,
        reason=(
            "confirmed by the operator"
            if status == "active"
            else "waiting for the confirmation"
            if status == "pending"
            else f"{status} when imported"
        ),
        created_at=now,
        confirmed_at=now if status == "active" else None,
    )


class _Mailer:
    """Sends pending readers the confirmation email; checks first (before anything is
    written) that it can: the sign-up pages are on, the keys and the SMTP password are set."""

    def __init__(self, config: Config) -> None:
        from newsletter import wiring
        from newsletter.cli.common import signing_keys

        if not config.signup.enabled:
            abort(
                f"{config.path}: signup.enabled is false: the confirmation link would lead "
                "to no page; turn it on (and run `newsletter serve`), or add --confirmed when "
                "they agreed already",
                EXIT_USAGE,
            )
        self.config = config
        self.keys = signing_keys(config, preview=False)
        self.settings = wiring.smtp_settings(config)

    def send(self, store: Store, records: list[SubscriberRecord], now: dt.datetime) -> None:
        """The emails, over one connection; a reader whose email did not go stays pending
        (exit 1, naming them: adding them again sends it again)."""
        from newsletter import compose
        from newsletter.deliver.smtp import SmtpSender
        from newsletter.web import tokens

        config = self.config
        masthead = compose.load_masthead(config)
        hours = config.signup.confirm_hours
        expires = now + dt.timedelta(hours=hours)
        letters = compose.Transactional(config.templates_path)
        messages = [
            letters.compose(
                "confirm",
                r.email,
                {
                    "confirm": f"{masthead.base_url}/confirm/"
                    + tokens.make_token(self.keys, "confirm", r.id, expires=expires)
                },
                masthead,
                now=now,
                confirm_hours=hours,
            )
            for r in records
        ]
        outcomes = _Outcomes()
        SmtpSender(self.settings, records_deliveries=False).send_all(messages, outcomes)
        for message in messages:
            if outcomes.sent.get(message.message_id):
                # Counts as the address's sign-up email of the day: the page sends no other.
                store.record_signup_mail(message.recipient.casefold(), now)
        failed = [
            (m.recipient, outcomes.failed.get(m.message_id, "not sent"))
            for m in messages
            if not outcomes.sent.get(m.message_id)
        ]
        if failed:
            for email, detail in failed[:-1]:
                click.echo(
                    f"newsletter: {email}: the confirmation email was not sent: {detail}", err=True
                )
            email, detail = failed[-1]
            abort(
                f"{email}: the confirmation email was not sent: {detail} (they stay pending; "
                "`newsletter subscribers add` sends it again)"
                if len(failed) == 1
                else f"{email}: the confirmation email was not sent: {detail} ({len(failed)} "
                "not sent; they stay pending; `newsletter subscribers add` sends each again)",
            )


class _Outcomes:
    """What became of each confirmation email (the sender's ``Events``)."""

    def __init__(self) -> None:
        self.sent: dict[str, bool] = {}
        self.failed: dict[str, str] = {}

    def started(self, message: Outgoing) -> None:
        pass

    def retrying(self, message: Outgoing, detail: str) -> None:
        pass

    def finished(self, message: Outgoing, outcome: Outcome) -> None:
        if outcome.status == "sent":
            self.sent[message.message_id] = True
        else:
            self.failed[message.message_id] = outcome.detail or outcome.status


@subscribers.command("import")
@config_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--confirmed",
    is_flag=True,
    help="They agreed already: active now, no confirmation emails.",
)
@handles_errors
def subscribers_import(config_path: Path, file: Path, confirmed: bool) -> None:
    """Add the readers of a CSV FILE (source import), all or none.

    The header is email,name,topics,cadence (name and cadence may be left out or empty;
    topics separated by ';'). Every bad row is reported as FILE:LINE: message, and then
    nothing is imported (exit 2): an address already here, in the config file, or removed
    before is a bad row. Without --confirmed each reader is pending and gets a
    confirmation email (like `subscribers add`). An export imports back: its status
    column keeps paused, unsubscribed, bounced and complained readers as they were.

    Example: newsletter subscribers import -c newsletter.yaml readers.csv --confirmed
    """
    from newsletter.cli.subscriber_csv import parse

    config = load_config(config_path)
    try:
        data = file.read_bytes()
    except OSError as e:
        abort(f"{file}: cannot read it: {e.strerror or e}", EXIT_USAGE)
    rows, problems = parse(file, data, config.topics)
    file_keys = {s.key for s in config.subscriber_models()}
    problems += [
        f"{file}:{r.line}: email: {r.email} is in {config.path}: its settings come from there"
        for r in rows
        if r.email.casefold() in file_keys
    ]
    if (
        config.state_url is not None or config.state_path.exists()
    ):  # every bad row at once: the file's and the store's
        from newsletter import wiring

        with wiring.open_state(config, read_only=True) as store:
            for r in rows:
                known = store.subscriber_by_email(r.email)
                if known is not None:
                    problems.append(
                        f"{file}:{r.line}: email: {r.email} is already a subscriber ({known.status})"
                    )
                elif store.is_removed(r.email):
                    problems.append(
                        f"{file}:{r.line}: email: {r.email} was removed from this newsletter; "
                        "add it again only on purpose (`newsletter subscribers add --again`)"
                    )
    if problems:
        for problem in sorted(problems, key=_line_of):
            click.echo(problem, err=True)
        abort(f"{file}: {len(problems)} problem(s); nothing imported", EXIT_USAGE)
    if not rows:
        click.echo(f"{file}: no readers in it; nothing imported")
        return
    to_confirm = not confirmed and any(r.status is None for r in rows)
    mailer = _Mailer(config) if to_confirm else None
    now = now_utc()
    with open_state(config) as store:
        added = store.add_subscribers(
            [_record(config, r, confirmed=confirmed, source="import", now=now) for r in rows],
            now=now,
        )
        pending = [r for r in added if r.status == "pending"]
        if mailer is not None and pending:
            mailer.send(store, pending, now)
    counts = Counter(r.status for r in added)
    said = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    click.echo(
        f"{file}: imported {len(added)} reader{'' if len(added) == 1 else 's'} ({said})"
        + ("; a confirmation email went to each pending one" if pending else "")
    )


def _line_of(problem: str) -> int:
    """The line a ``FILE:LINE: message`` names (the file's name may hold colons)."""
    match = re.search(r":(\d+): ", problem)
    return int(match.group(1)) if match else 0


@subscribers.command("export")
@config_option
@click.option(
    "--format",
    "format_",
    type=click.Choice(["csv", "json"]),
    default="csv",
    show_default=True,
    help="CSV (topics separated by ';') or a JSON list of objects.",
)
@handles_errors
def subscribers_export(config_path: Path, format_: str) -> None:
    """Write every subscriber to stdout: email, name, topics, cadence, status, source and
    times (created_at, confirmed_at, updated_at; ISO 8601, UTC).

    The state file's rows, then the config file's subscribers that have none yet. It
    imports back (`subscribers import`).

    Example: newsletter subscribers export -c newsletter.yaml > readers.csv
    """
    from newsletter import wiring
    from newsletter.cli.subscriber_csv import export_csv, export_json
    from newsletter.models import SubscriberRecord

    config = load_config(config_path)
    records: list[SubscriberRecord] = []
    if config.state_url is not None or config.state_path.exists():
        with wiring.open_state(config, read_only=True) as store:
            records = list(store.subscribers())
    have = {r.key for r in records}
    records += [
        SubscriberRecord.of(s, status="active", source="config")
        for s in config.subscriber_models()
        if s.key not in have
    ]
    click.echo(export_csv(records) if format_ == "csv" else export_json(records), nl=False)


@subscribers.command("remove")
@config_option
@click.argument("email")
@handles_errors
def subscribers_remove(config_path: Path, email: str) -> None:
    """Erase EMAIL's personal data: their row and sent history (past runs name them by a
    keyed hash). Only that hash of the address is kept, so that an old list imported
    again does not add them back by mistake; `subscribers add --again` adds them on purpose.

    Example: newsletter subscribers remove -c newsletter.yaml ada@example.org
    """
    config = load_config(config_path)
    with open_state(config) as store:
        found = store.remove_subscriber(email, now_utc())
    if found:
        click.echo(
            f"{email}: removed; only a keyed hash of the address is kept, so that it is not "
            "added again by mistake (`newsletter subscribers add --again` adds it on purpose)"
        )
    else:
        click.echo(
            f"{email}: not a subscriber here; it is blocked from being added by mistake all the same"
        )
    if email.strip().casefold() in {s.key for s in config.subscriber_models()}:
        click.echo(
            f"note: {email} is still in {config.path}: it gets no digest, but remove it there too",
            err=True,
        )
