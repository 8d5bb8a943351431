"""Reading a message's structure the way reports are really written (often badly)."""

from __future__ import annotations

import email.policy
import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr

ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
_HEADERS_TYPES = ("text/rfc822-headers", "text/rfc822-header")  # the singular is seen too


def parts(msg: Message) -> Iterator[Message]:
    """Every part of the report itself; an enclosed message is yielded but not entered."""
    yield msg
    if msg.get_content_maintype() == "message" or msg.get_content_type() in _HEADERS_TYPES:
        return
    if msg.is_multipart():
        for sub in msg.get_payload():
            if isinstance(sub, Message):
                yield from parts(sub)


def payload_text(part: Message) -> str:
    """A non-multipart part's body as text, decoded from its transfer encoding and charset."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:  # a charset Python does not know
        return payload.decode("utf-8", "replace")


def header_blocks(text: str) -> list[Message]:
    """Blocks of ``Name: value`` fields separated by blank lines (RFC 3464, RFC 5965)."""
    parser = HeaderParser(policy=email.policy.compat32)
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text)
    return [parser.parsestr(c.strip("\r\n") + "\n") for c in chunks if c.strip()]


def field_blocks(part: Message) -> list[Message]:
    """The field blocks of a message/delivery-status or feedback-report part, however held."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks: list[Message] = []
        for sub in payload:
            if not isinstance(sub, Message):
                continue
            blocks.append(sub)
            # Only message/delivery-status is split into blocks by the email package; any other
            # type is parsed as one message whose body holds the remaining blocks.
            body = sub.get_payload()
            if isinstance(body, str) and body.strip():
                blocks.extend(header_blocks(body))
        return blocks
    if isinstance(payload, str):
        return header_blocks(payload_text(part) or payload)
    return []


def enclosed(all_parts: list[Message]) -> Iterator[Message]:
    """Each enclosed message (message/rfc822), or its headers alone (text/rfc822-headers)."""
    for part in all_parts:
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                yield payload[0]
        elif ctype in _HEADERS_TYPES:
            yield HeaderParser(policy=email.policy.compat32).parsestr(payload_text(part))


def header(msg: Message, name: str) -> str:
    """A header's value with RFC 2047 words decoded; "" when absent."""
    value = msg.get(name)
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except Exception:  # a malformed encoded word or an unknown charset: keep it as it came
        return str(value)


def addresses(value: str) -> list[str]:
    """The addresses in a header value or a field, in order."""
    found = [a for _, a in getaddresses([value]) if "@" in a]
    return found or ADDRESS.findall(value)


def bare_address(value: str) -> str | None:
    """An address field of a report (``rfc822; <a@b>``) as the bare address, or None."""
    value = value.split(";", 1)[1] if ";" in value else value
    address = parseaddr(value.strip())[1] or value.strip().strip("<>")
    m = ADDRESS.search(address)
    return m[0] if m else None
