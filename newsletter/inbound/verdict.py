"""What an inbound report means for the newsletter: ``read(raw) -> Verdict``. Pure.

``report.parse`` says what the message states; ``reasons`` judges each failure; this module
puts the two together. ``permanent`` is true only when every failed recipient's failure is
permanent (the address itself); a delay warning or a success notification never is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from newsletter.inbound._types import Entry
from newsletter.inbound.mime import ADDRESS
from newsletter.inbound.reasons import Reason, classify, is_permanent
from newsletter.inbound.report import parse

# "unsubscribe" is decided by the caller from the envelope address (a tokenized unsubscribe+
# address), never from the message: the content is whatever a mail client chose to send.
Kind = Literal["bounce", "complaint", "unsubscribe", "auto-reply", "other"]

_SUCCESS_ACTIONS = ("delivered", "relayed", "expanded", "deliverable")
_DIAGNOSTIC_CHARS = 500  # enough for any server's reply; a report's whole text is not kept


@dataclass(frozen=True, slots=True)
class Detail:
    """One failed recipient of a bounce, judged. Made by ``read``; read by the inbound wiring."""

    recipient: str | None  # as the report states it; None when it does not say
    status: str | None  # "5.1.1"
    diagnostic: str  # what the server said: one line, at most 500 characters
    reason: Reason
    permanent: bool
    final: bool  # False for a delay warning: the sending server is still trying


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one inbound message means. Made by ``read``; read by ``newsletter inbound``."""

    kind: Kind
    permanent: bool | None  # bounces only: every failure is of the address itself
    recipients: tuple[str, ...] = ()  # failed or complained addresses, as the report states them
    status: str | None = None  # the first recipient's enhanced status code
    details: tuple[Detail, ...] = ()
    feedback_type: str | None = None  # complaints: the ARF Feedback-Type (abuse, opt-out)

    @property
    def delay_only(self) -> bool:
        """A bounce that only warns of a delay: the sending server still tries; nothing to count."""
        return self.kind == "bounce" and not any(d.final for d in self.details)


def read(raw: bytes) -> Verdict:
    """Read one raw inbound message (a bounce, a complaint, an auto-reply, ...) into a verdict.

    Never raises: a message that is not understood is ``other``, which changes nothing.
    """
    report = parse(raw)
    if report.kind == "complaint":
        complained = tuple(a for a in report.complained if ADDRESS.fullmatch(a))
        return Verdict("complaint", None, complained, feedback_type=report.feedback_type)
    if report.kind == "auto-reply":
        return Verdict("auto-reply", None)
    if report.kind != "delivery":
        return Verdict("other", None, feedback_type=report.feedback_type)
    failed = [e for e in report.entries if not _succeeded(e)]
    if not failed:  # a success notification: "delivered", "relayed", 2.x.x
        return Verdict("other", None)
    details = tuple(_judge(e) for e in failed)
    return Verdict(
        kind="bounce",
        permanent=all(d.permanent for d in details),
        recipients=tuple(dict.fromkeys(d.recipient for d in details if d.recipient)),
        status=details[0].status,
        details=details,
    )


def _succeeded(entry: Entry) -> bool:
    if entry.action in _SUCCESS_ACTIONS:
        return True
    return entry.action is None and entry.status is not None and entry.status.startswith("2.")


def _judge(entry: Entry) -> Detail:
    final = entry.action != "delayed"
    # A local delivery program (a pipe, procmail) failed after the receiving system took the
    # recipient: that is the system's trouble, whatever the program printed.
    reason: Reason = (
        "mailer" if entry.mailer else classify(entry.status, entry.diagnostic, entry.stage)
    )
    recipient = entry.recipient if entry.recipient and ADDRESS.fullmatch(entry.recipient) else None
    return Detail(
        recipient=recipient,
        status=entry.status,
        diagnostic=" ".join(entry.diagnostic.split())[:_DIAGNOSTIC_CHARS],
        reason=reason,
        permanent=final and is_permanent(reason),
        final=final,
    )
