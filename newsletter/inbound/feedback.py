"""Spam complaints: ARF reports (RFC 5965) and Microsoft's own format (JMRP)."""

from __future__ import annotations

from email.message import Message

from newsletter.inbound import mime
from newsletter.inbound._types import Report, ReportKind

TYPE = "message/feedback-report"
# The Feedback-Types that mean "this reader does not want this mail" (RFC 5965, and the
# opt-out of the ARF draft that feedback loops still send); fraud, virus, auth-failure and
# not-spam reports are about something else.
COMPLAINTS = ("abuse", "opt-out", "opt-out-list")
# Microsoft's feedback loop encloses the complained message, naming its recipient here.
JMRP_RECIPIENT = "X-HmXmrOriginalRecipient"


def arf(part: Message, parts: list[Message]) -> Report:
    """The complaint a message/feedback-report part states."""
    blocks = mime.field_blocks(part)
    fields = blocks[0] if blocks else Message()
    ftype = str(fields.get("Feedback-Type", "")).strip().lower() or None
    complained: list[str] = []
    for name in ("Original-Rcpt-To", "Removal-Recipient"):
        for value in fields.get_all(name, []):
            complained.extend(mime.addresses(str(value)))
    if not complained:  # the complained message's own addressee
        for msg in mime.enclosed(parts):
            complained.extend(mime.addresses(mime.header(msg, "To")))
            if complained:
                break
    kind: ReportKind = "complaint" if ftype in COMPLAINTS else "other"
    return Report(kind, feedback_type=ftype, complained=tuple(dict.fromkeys(complained)))


def jmrp(parts: list[Message]) -> Report | None:
    """A complaint in Microsoft's format, or None."""
    for msg in mime.enclosed(parts):
        value = msg.get(JMRP_RECIPIENT)
        if value:
            return Report(
                "complaint", feedback_type="abuse", complained=tuple(mime.addresses(str(value)))
            )
    return None
