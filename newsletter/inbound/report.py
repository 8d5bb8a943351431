"""A raw message read into what it states: which report it is, who failed, and what was said.

Pure: bytes in, a ``Report`` out; no rule judges anything here (that is ``reasons``). Any bytes
at all are read without raising: whatever cannot be understood is ``other``.

What is recognised, in this order:

- a spam complaint: an ARF report (RFC 5965), Microsoft's format, an Amazon SES notification;
- a DSN (RFC 3464/6533), also when pasted into the text of a forwarded or broken report, or
  enclosed whole by a gateway; an Amazon SES bounce notification;
- the non-standard report of a mail system (qmail, Exim, Exchange, Gmail, ...), told by its
  sender (MAILER-DAEMON, postmaster) or subject, or by Mailman's detectors (``flufl.bounce``);
- an automatic reply (RFC 3834 ``Auto-Submitted``, ``X-Autoreply``, vacation subjects).
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from email.message import Message
from email.utils import parseaddr

from newsletter.inbound import dsn, feedback, mime, prose, ses
from newsletter.inbound._types import Entry, Report, ReportKind

__all__ = ["Entry", "Report", "ReportKind", "parse"]

log = logging.getLogger(__name__)

_MAILER_NAME = re.compile(
    r"mail delivery|mailer[- ]daemon|postmaster|delivery (?:sub)?system", re.I
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status|failure|failed|notification|report|problem)"
    r"|returned mail|returning message|mail delivery failed|failure notice|failed delivery"
    r"|non-?delivery|could not be delivered|delivery has failed|mail system error",
    re.I,
)
_AUTO_SUBJECT = re.compile(
    r"out of (?:the )?office|automatic reply|auto[- ]?reply|auto[- ]?response|autoresponse"
    r"|^\s*auto:|vacation|away from|on leave|abwesenheit|r[ée]ponse automatique"
    r"|respuesta autom[áa]tica|risposta automatica|automatisch",
    re.I,
)


def parse(raw: bytes) -> Report:
    """Read one raw message (as an MTA hands it over) into the report it is."""
    try:
        return _parse(email.message_from_bytes(raw, policy=email.policy.compat32))
    except Exception as e:  # hostile input: whatever the email package trips on is "other"
        log.info("inbound.unparsable error=%s", type(e).__name__)
        return Report("other")


def _parse(msg: Message) -> Report:
    parts = list(mime.parts(msg))
    for part in parts:
        if part.get_content_type() == feedback.TYPE:
            return feedback.arf(part, parts)
    text = prose.human_text(parts)
    blocks = [b for p in parts if p.get_content_type() in dsn.TYPES for b in mime.field_blocks(p)]
    entries = dsn.entries(blocks or dsn.blocks_in_text(text), text)
    if entries:
        return Report("delivery", entries)
    if '"notificationType"' in text and (notified := ses.notification(text)) is not None:
        return notified
    complaint = feedback.jmrp(parts)
    if complaint is not None:
        return complaint
    for enclosed in mime.enclosed(parts):
        # A gateway that wraps the report it received in a notice of its own.
        if enclosed.get_content_type() == "multipart/report":
            inner = _parse(enclosed)
            if inner.kind in ("delivery", "complaint"):
                return inner
    if _looks_like_mailer(msg):
        return Report("delivery", prose.entries(msg, text))
    if _looks_like_auto_reply(msg):
        return Report("auto-reply")
    temporary, permanent = prose.detected(msg)
    if temporary or permanent:
        return Report("delivery", prose.entries(msg, text, (temporary, permanent)))
    return Report("other")


def _looks_like_mailer(msg: Message) -> bool:
    name, address = parseaddr(mime.header(msg, "From"))
    return bool(
        prose.MAILER_LOCAL.match(address.rsplit("@", 1)[0])
        or _MAILER_NAME.search(name)
        or _BOUNCE_SUBJECT.search(mime.header(msg, "Subject"))
    )


def _looks_like_auto_reply(msg: Message) -> bool:
    """RFC 3834's Auto-Submitted, the headers of common responders, or a vacation subject."""
    submitted = mime.header(msg, "Auto-Submitted").strip().lower()
    if submitted and submitted != "no":
        return True
    if any(msg.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Autoresponder")):
        return True
    precedence = mime.header(msg, "Precedence").strip().lower()
    return precedence == "auto_reply" or bool(_AUTO_SUBJECT.search(mime.header(msg, "Subject")))
