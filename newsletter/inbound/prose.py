"""The words of a report written for people, and the non-standard reports that are only that.

qmail, Exim, Exchange, Gmail, Yahoo and many others write what failed as text. Mailman's
detectors (``flufl.bounce``) find the failed recipients in it; what the server said is read from
the stretch of text about each one, cut before the returned message (whose words are ours).
"""

from __future__ import annotations

import html
import logging
import re
from email.message import Message

from newsletter.inbound import mime
from newsletter.inbound._types import Entry
from newsletter.inbound.reasons import find_reply, find_stage, find_status

log = logging.getLogger(__name__)
_DETECTORS_LOG = logging.getLogger("flufl.bounce")

MAILER_LOCAL = re.compile(r"^(?:mailer[-_]?daemon|post[-_]?master|mail[-_]daemon|bounces?)$", re.I)

# Where a report starts quoting the message it returns.
_RETURNED = re.compile(
    r"^\W*(?:this is a copy of|below this line is a copy|a copy of the (?:original )?message"
    r"|(?:the )?(?:original|returned|undelivered|rejected) message"
    r"(?:\s+(?:headers?|follows?|is|was))?\s*(?:follows?|below)?\W*$"
    r"|original message (?:headers|follows|details)|(?:the )?headers? of the original message"
    r"|message headers follow|original mail as follows|-+\s*original message)",
    re.I,
)
_HEADER_START = re.compile(
    r"^(?:Received|Return-Path|Delivered-To|DKIM-Signature|Message-I[Dd]|MIME-Version"
    r"|X-[\w-]+|Authentication-Results|ARC-[\w-]+):",
)


def human_text(parts: list[Message]) -> str:
    """The report's words for people, without the message it returns."""
    texts = [mime.payload_text(p) for p in parts if p.get_content_type() == "text/plain"]
    # A multipart whose boundary is never found (a broken report) holds its body as one string.
    texts += [
        payload
        for p in parts
        if p.get_content_maintype() == "multipart" and isinstance(payload := p.get_payload(), str)
    ]
    if not any(t.strip() for t in texts):
        texts = [
            html.unescape(re.sub(r"<[^>]*>", " ", mime.payload_text(p)))
            for p in parts
            if p.get_content_type() == "text/html"
        ]
    return "\n".join(_before_returned(t) for t in texts)


def _before_returned(text: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _RETURNED.match(line.lstrip("> \t")) or (i > 0 and _HEADER_START.match(line)):
            return "\n".join(lines[:i])
    return text


def segment(text: str, recipient: str | None, recipients: list[str]) -> str:
    """What the text says of one recipient: from where it names it to where it names another.

    The whole text when it does not name it, or when that stretch says next to nothing.
    """
    if not recipient:
        return text
    low = text.lower()
    start = low.find(recipient.lower())
    if start < 0:
        return text
    ends = [
        i
        for other in recipients
        if other.lower() != recipient.lower() and (i := low.find(other.lower(), start)) > start
    ]
    piece = text[start : min(ends, default=len(text))]
    return piece if find_status(piece) or find_reply(piece) or len(piece.split()) > 3 else text


def detected(msg: Message) -> tuple[list[str], list[str]]:
    """Mailman's detectors: the (temporary, permanent) failed recipients of a report."""
    from flufl.bounce import all_failures

    # The detectors log each step, and a traceback for a report they trip on; one line of ours
    # says enough.
    was_disabled, _DETECTORS_LOG.disabled = _DETECTORS_LOG.disabled, True
    try:
        temporary, permanent = all_failures(msg)
    except Exception as e:  # a detector tripping on a malformed report finds nothing
        log.info("inbound.detector_failed error=%s", type(e).__name__)
        return [], []
    finally:
        _DETECTORS_LOG.disabled = was_disabled

    def decoded(found: frozenset[bytes]) -> list[str]:
        out = [a.decode("ascii", "replace") for a in sorted(found)]
        return [a for a in out if mime.ADDRESS.fullmatch(a)]

    return decoded(temporary), decoded(permanent)


def entries(
    msg: Message, text: str, found: tuple[list[str], list[str]] | None = None
) -> tuple[Entry, ...]:
    """The entries of a non-standard report: who failed, and what its text says of each."""
    temporary, permanent = found if found is not None else detected(msg)
    # The detectors also read the returned message; an address the report's own words do not
    # name is most likely one of its headers.
    low = text.lower()
    stated = [a for a in temporary + permanent if a.lower() in low]
    if stated:
        temporary = [a for a in temporary if a in stated]
        permanent = [a for a in permanent if a in stated]
    elif not (temporary or permanent):
        permanent = _listed_recipient(msg, text)
    rows: list[tuple[str | None, str]] = [(a, "delayed") for a in temporary]
    rows += [(a, "failed") for a in permanent]
    named = [a for a, _ in rows if a]
    out = []
    for address, action in rows or [(None, "failed")]:
        piece = segment(text, address, named)
        out.append(
            Entry(
                recipient=address,
                action=action,
                status=find_status(piece),
                reply=find_reply(piece),
                diagnostic=" ".join(piece.split()),
                stage=find_stage(piece),
            )
        )
    return tuple(out)


def _listed_recipient(msg: Message, text: str) -> list[str]:
    """The first address that begins a line (``<a@b>: ...``, ``a@b [User unknown]``).

    That is how reports list the failed ones; an address inside a sentence is as likely the
    postmaster's to write to. The report's own sender and addressee do not count.
    """
    ours = {
        a.lower() for a in mime.addresses(mime.header(msg, "To") + "," + mime.header(msg, "From"))
    }
    listed = re.compile(r"\s*[<\"']?(" + mime.ADDRESS.pattern + ")")
    for line in text.splitlines():
        m = listed.match(line)
        if m and m[1].lower() not in ours and not MAILER_LOCAL.match(m[1].split("@", 1)[0]):
            return [m[1]]
    return []
