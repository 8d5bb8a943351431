"""One inbound message handled: who it is about, what it means, and what changes.

    verdict  = read(raw)                                  (pure: what the report says)
    found    = addressed(raw, envelope_to, bases, keys)   (pure: the tokens it carries)
    targets  = the VERP token's subscriber, else the report's recipients that are
               subscribers (store.subscriber_by_email)
    changes  = decide(verdict, found, targets, soft counts, settings)    (pure)
    apply(store, changes, now)                            unless a dry run

Who a message is about: the VERP token of the address it was sent to (``bounces+<token>@``)
names the subscriber and the run; a message to an unsubscribe address (``unsubscribe+<token>@``)
is that subscriber's unsubscribe. A message sent to one of *our* tokenized addresses whose token
does not verify (forged, altered, truncated, signed by a key we no longer have) changes nothing:
it is either tampering or too broken to trust, and falling back to the addresses the report
names would let anyone who can write a bounce suppress any subscriber by naming them. Only a
message with no token of ours at all (a mail system that bounced to the From address, a
feedback loop that redacts nothing) falls back to the report's recipients, and then only to
those that are subscribers. A complaint's enclosed original is searched for a token too
(its Return-Path, its List-Unsubscribe), since feedback loops often redact the recipient.

The rules: a permanent failure of the address suppresses it (``bounced``) at once; any other
failure is counted and ``soft_bounces`` of them within ``soft_days`` suppress it; a delay
warning counts nothing; a complaint (ARF abuse or opt-out) makes it ``complained``; an
unsubscribe by mail makes it ``unsubscribed``; an auto-reply or a success notice changes
nothing. A status an operator or the reader chose (unsubscribed, complained) is not
overwritten by a bounce, though the bounce is still recorded.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from newsletter.inbound import mime
from newsletter.inbound.reasons import classify, find_status
from newsletter.inbound.tokens import UNSUBSCRIBE_LOCAL, parse_unsubscribe, parse_verp
from newsletter.inbound.verdict import Detail, Kind, Verdict, read
from newsletter.models import InboundKind, SubscriberRecord, SubscriberStatus

if TYPE_CHECKING:
    from newsletter.config import Config
    from newsletter.store import Store

log = logging.getLogger(__name__)

Action = Literal["suppressed", "counted", "unsubscribed", "none"]

#: Where an MTA or a mail server says who a message was delivered to, most precise first.
_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Cc")
# A tokenized address anywhere in a message: base32 in either case (mail systems fold it).
_TOKENIZED = re.compile(rb"[A-Za-z0-9._%=-]{1,64}\+[A-Za-z2-7]{8,64}@[A-Za-z0-9.-]+")
# Statuses a bounce does not overwrite: the reader's or the operator's choice.
_CHOSEN = frozenset({"unsubscribed", "complained"})


@dataclass(frozen=True, slots=True)
class Rules:
    """The settings the rules read (``config.inbound``, ``smtp.bounce_address``)."""

    soft_bounces: int = 3
    soft_days: int = 14
    #: The bounce address (``bounces@example.org``): its tokenized forms and the unsubscribe
    #: address on its domain are ours. None: no message carries a token of ours.
    bounce_address: str | None = None

    @classmethod
    def of(cls, config: Config) -> Rules:
        """The rules a config sets (``inbound``, ``smtp.bounce_address``)."""
        inbound = config.inbound
        return cls(inbound.soft_bounces, inbound.soft_days, config.smtp.bounce_address)

    @property
    def bases(self) -> tuple[tuple[str, str], ...]:
        """(local part, domain) of each address whose ``+token`` forms are ours, casefolded."""
        if not self.bounce_address:
            return ()
        local, _, domain = self.bounce_address.casefold().rpartition("@")
        return ((local, domain), (UNSUBSCRIBE_LOCAL, domain))


@dataclass(frozen=True, slots=True)
class Found:
    """The tokens of ours a message carries. Made by ``addressed``; read by ``handle``."""

    #: A VERP token's subscriber id and run; or an enclosed unsubscribe token's (run None).
    subscriber: str | None = None
    run_id: int | None = None
    #: The message was sent to this subscriber's unsubscribe address.
    unsubscribe: str | None = None
    #: The message was sent to a tokenized address of ours whose token did not verify.
    forged: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One subscriber's change: an event recorded, maybe a new status. Made by ``decide``."""

    subscriber_id: str
    email: str
    event: InboundKind
    status: SubscriberStatus | None  # the new status; None: unchanged
    reason: str
    code: str | None = None  # the enhanced status code of a bounce
    run_id: int | None = None


@dataclass(frozen=True, slots=True)
class Handled:
    """What one message meant and did; ``as_json()`` is what ``inbound --json`` prints."""

    kind: Kind
    permanent: bool | None
    recipients: tuple[str, ...]
    status: str | None
    action: Action
    changes: tuple[Change, ...] = ()
    note: str = ""  # why nothing changed, when that is not obvious

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "permanent": self.permanent,
            "recipients": list(self.recipients),
            "status": self.status,
            "action": self.action,
        }

    def line(self) -> str:
        """One line for the operator."""
        who = ", ".join(self.recipients) or "no known recipient"
        code = f" ({self.status})" if self.status else ""
        note = f": {self.note}" if self.note else ""
        return f"{self.kind}: {who}{code}: {self.action}{note}"


def addressed(raw: bytes, envelope_to: Sequence[str], rules: Rules, keys: Sequence[bytes]) -> Found:
    """The tokens of ours in a message (pure). ``envelope_to``: the MTA's recipient (a pipe's
    ``--envelope-to``); without it the message's delivery headers say who it was for."""
    bases = rules.bases
    if not bases or not keys:
        return Found()
    recipients = list(envelope_to) or _header_recipients(raw)
    ours = [a for a in recipients if _purpose(a, bases) is not None]
    for address in ours:
        found = _read(address, _purpose(address, bases), keys, enclosed=False)
        if found is not None:
            return found
    if ours:
        return Found(forged=ours[0])
    # Not sent to a token of ours: one in the message (a complaint's enclosed original) names
    # whom it was sent to.
    for match in _TOKENIZED.finditer(raw):
        address = match[0].decode("ascii")
        found = _read(address, _purpose(address, bases), keys, enclosed=True)
        if found is not None:
            return found
    return Found()


def handle(
    raw: bytes,
    envelope_to: Sequence[str],
    *,
    store: Store,
    keys: Sequence[bytes],
    rules: Rules,
    now: dt.datetime,
    dry_run: bool = False,
) -> Handled:
    """Read, decide and (unless ``dry_run``) apply. Raises only when the store fails."""
    verdict = read(raw)
    found = addressed(raw, envelope_to, rules, keys)
    if found.forged is not None:
        log.warning(
            "inbound.forged_token address=%s kind=%s", _redacted(found.forged), verdict.kind
        )
        return _nothing(verdict, "a token of ours that does not verify: ignored")
    if found.unsubscribe is not None:
        if verdict.kind == "auto-reply":  # an out-of-office sent to the mailto, not a request
            return _nothing(verdict)
        record = store.subscriber_by_id(found.unsubscribe)
        if record is None:
            return Handled(
                "unsubscribe", None, (), None, "none", note="no such subscriber (removed?)"
            )
        change = (
            Change(record.id, record.email, "unsubscribe", "unsubscribed", "unsubscribed by mail")
            if record.status != "unsubscribed"
            else None
        )
        handled = Handled(
            "unsubscribe",
            None,
            (record.email,),
            None,
            "unsubscribed",
            (change,) if change else (),
            "" if change else "already unsubscribed",
        )
        return _applied(handled, store, now, dry_run)
    if verdict.kind not in ("bounce", "complaint"):
        return _nothing(verdict)
    targets = _targets(verdict, found, store)
    since = now - dt.timedelta(days=rules.soft_days)

    def soft_before(record: SubscriberRecord) -> int:
        return store.inbound_count(record.id, ("soft",), since)

    handled = decide(verdict, found, targets, soft_before, rules)
    return _applied(handled, store, now, dry_run)


def decide(
    verdict: Verdict,
    found: Found,
    targets: Sequence[tuple[SubscriberRecord, str | None]],
    soft_before: Any,
    rules: Rules,
) -> Handled:
    """The changes a bounce or complaint makes (pure but for ``soft_before(record) -> int``,
    the soft bounces already counted within ``rules.soft_days``).

    ``targets``: each subscriber it is about, with the address the report names for it (None:
    the VERP token named it and the report names no one, or someone else).
    """
    recipients = verdict.recipients or tuple(r.email for r, _ in targets)
    if verdict.kind == "complaint":
        changes = tuple(
            Change(
                r.id,
                r.email,
                "complaint",
                "complained" if r.status != "complained" else None,
                f"spam complaint ({verdict.feedback_type or 'abuse'})",
                run_id=found.run_id,
            )
            for r, _ in targets
        )
        action: Action = "suppressed" if changes else "none"
        return Handled("complaint", None, recipients, None, action, changes)
    if verdict.delay_only or not targets:
        note = "a delay warning: the sending server still tries" if verdict.delay_only else ""
        return Handled("bounce", verdict.permanent, recipients, verdict.status, "none", (), note)
    changes_list: list[Change] = []
    suppressed = False
    for record, named in targets:
        details = [d for d in verdict.details if d.final]
        if named is not None:
            mine = [
                d for d in details if d.recipient and d.recipient.casefold() == named.casefold()
            ]
            details = mine or details
        permanent = bool(details) and all(d.permanent for d in details)
        first = details[0] if details else None
        code = first.status if first else verdict.status
        why = (first.diagnostic or first.reason) if first else "bounced"
        bounced: SubscriberStatus | None = (
            None if record.status in _CHOSEN or record.status == "bounced" else "bounced"
        )
        if permanent:
            changes_list.append(
                Change(record.id, record.email, "hard", bounced, why, code, found.run_id)
            )
            suppressed = True
            continue
        count = soft_before(record) + 1
        over = count >= rules.soft_bounces
        status = bounced if over else None
        reason = f"{why} ({count} failures within {rules.soft_days} days)" if over else why
        changes_list.append(
            Change(record.id, record.email, "soft", status, reason, code, found.run_id)
        )
        suppressed = suppressed or over
    action = "suppressed" if suppressed else "counted"
    return Handled(
        "bounce", verdict.permanent, recipients, verdict.status, action, tuple(changes_list)
    )


def smtp_refusal(
    store: Store,
    address: str,
    reply: str,
    *,
    permanent: bool,
    rules: Rules,
    run_id: int | None,
    now: dt.datetime,
) -> Handled:
    """A 5xx to RCPT during the SMTP conversation, judged and applied as a bounce read back
    later would be: ``permanent`` (the reply condemns the address) suppresses at once, any
    other is counted."""
    record = store.subscriber_by_email(address)
    code = find_status(reply)
    reason = classify(code, reply, "RCPT")
    detail = Detail(address, code, " ".join(reply.split())[:500], reason, permanent, True)
    verdict = Verdict("bounce", permanent, (address,), code, (detail,))
    if record is None:
        return _nothing(verdict, "not a stored subscriber")
    since = now - dt.timedelta(days=rules.soft_days)
    handled = decide(
        verdict,
        Found(subscriber=record.id, run_id=run_id),
        [(record, address)],
        lambda r: store.inbound_count(r.id, ("soft",), since),
        rules,
    )
    return _applied(handled, store, now, dry_run=False)


def apply(store: Store, changes: Iterable[Change], now: dt.datetime) -> None:
    """Record each event and set each new status."""
    for c in changes:
        store.record_inbound(
            c.subscriber_id, c.event, now, status=c.code, detail=c.reason[:500], run_id=c.run_id
        )
        if c.status is not None:
            store.set_subscriber_status(c.subscriber_id, c.status, c.reason[:500], now)
        log.info(
            "inbound.%s subscriber=%s status=%s code=%s",
            c.event,
            c.subscriber_id,
            c.status or "unchanged",
            c.code,
        )


# -- helpers ----------------------------------------------------------------------------------


def _targets(
    verdict: Verdict, found: Found, store: Store
) -> list[tuple[SubscriberRecord, str | None]]:
    """The subscribers a bounce or complaint is about: the token's, else the report's."""
    if found.subscriber is not None:
        record = store.subscriber_by_id(found.subscriber)
        if record is None:
            return []
        named = next(
            (a for a in verdict.recipients if a.casefold() == record.email.casefold()), None
        )
        return [(record, named)]
    targets: list[tuple[SubscriberRecord, str | None]] = []
    seen: set[str] = set()
    for address in verdict.recipients:
        record = store.subscriber_by_email(address)
        if record is not None and record.id not in seen:
            seen.add(record.id)
            targets.append((record, address))
    return targets


def _applied(handled: Handled, store: Store, now: dt.datetime, dry_run: bool) -> Handled:
    if not dry_run:
        apply(store, handled.changes, now)
    return handled


def _nothing(verdict: Verdict, note: str = "") -> Handled:
    return Handled(
        verdict.kind, verdict.permanent, verdict.recipients, verdict.status, "none", (), note
    )


def _purpose(address: str, bases: Sequence[tuple[str, str]]) -> str | None:
    """ "verp" for a tokenized bounce address, "unsubscribe" for a tokenized unsubscribe
    address (``bases``: the bounce address's, then the unsubscribe address's), else None."""
    local, _, domain = address.strip().strip("<>").casefold().rpartition("@")
    base, plus, token = local.partition("+")
    if not (plus and token):
        return None
    if (base, domain) == bases[0]:
        return "verp"
    return "unsubscribe" if (base, domain) == bases[1] else None


def _read(
    address: str, purpose: str | None, keys: Sequence[bytes], *, enclosed: bool
) -> Found | None:
    """What a tokenized address of ours names, under any key; None unless it verifies. Each
    token counts only under its own address: an unsubscribe token under the bounce address
    is as good as forged. An enclosed unsubscribe address names whom a message was for."""
    for key in keys:
        if purpose == "verp":
            verp = parse_verp(address, key)
            if verp is not None:
                return Found(subscriber=str(verp.subscriber), run_id=verp.run_id)
        elif purpose == "unsubscribe":
            who = parse_unsubscribe(address, key)
            if who is not None:
                return Found(subscriber=str(who)) if enclosed else Found(unsubscribe=str(who))
    return None


def _header_recipients(raw: bytes) -> list[str]:
    """The addresses a message's own delivery headers say it was for, most precise first."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception:  # bytes the email package cannot make a message of: no addresses
        return []
    found: list[str] = []
    for name in _RECIPIENT_HEADERS:
        for value in msg.get_all(name, []):
            found.extend(mime.addresses(str(value)))
    return list(dict.fromkeys(found))


def _redacted(address: str) -> str:
    """An address with its token cut short: enough to recognise, not to replay."""
    local, _, domain = address.rpartition("@")
    base, _, token = local.partition("+")
    return f"{base}+{token[:6]}...@{domain}"


__all__ = [
    "Action",
    "Change",
    "Found",
    "Handled",
    "Rules",
    "addressed",
    "apply",
    "decide",
    "handle",
    "smtp_refusal",
]
