"""Delivery status notifications (RFC 3464, RFC 6533): one entry per recipient block.

The blocks come from a message/delivery-status part or, when a report was forwarded, quoted or
built with a broken MIME structure, from the same fields written out in its text.
"""

from __future__ import annotations

import re
from email.message import Message

from newsletter.inbound import mime, prose
from newsletter.inbound._types import Entry
from newsletter.inbound.reasons import find_reply, find_stage, find_status

TYPES = ("message/delivery-status", "message/global-delivery-status")

_FIELD = re.compile(
    r"^(Final-Recipient|Original-Recipient|Action|Status|Diagnostic-Code|Remote-MTA)\s*:(.*)$",
    re.I,
)


def blocks_in_text(text: str) -> list[Message]:
    """Per-recipient DSN fields written out in text, quoted (``> ``) or not."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for raw_line in text.splitlines():
        line = re.sub(r"^(?:>[ \t]?)+", "", raw_line)
        m = _FIELD.match(line)
        if m:
            name, value = m[1].title(), m[2].strip()
            if current and (
                name in current or (name == "Original-Recipient" and "Final-Recipient" in current)
            ):
                blocks.append(current)  # the next recipient's block
                current = {}
            current[name] = value
            last = name
        elif last and line[:1] in (" ", "\t") and line.strip():
            current[last] += " " + line.strip()
        else:
            last = ""
    if current:
        blocks.append(current)
    out = []
    for fields in blocks:
        block = Message()
        for name, value in fields.items():
            block[name] = value
        out.append(block)
    return out


def entries(blocks: list[Message], text: str) -> tuple[Entry, ...]:
    """The entries of the per-recipient blocks; ``text`` is the report's prose around them."""
    rows = [(b, _recipient(b)) for b in blocks if _is_per_recipient(b)]
    named = [r for _, r in rows if r]
    return tuple(_entry(b, r, prose.segment(text, r, named)) for b, r in rows)


def _is_per_recipient(block: Message) -> bool:
    return any(block.get(f) for f in ("Final-Recipient", "Original-Recipient", "Action", "Status"))


def _recipient(block: Message) -> str | None:
    # The address we sent to (ORCPT) before whatever the receiving side expanded it to.
    original = mime.bare_address(str(block.get("Original-Recipient", "") or ""))
    return original or mime.bare_address(str(block.get("Final-Recipient", "") or ""))


def _entry(block: Message, recipient: str | None, text: str) -> Entry:
    action = str(block.get("Action", "") or "").strip().lower().split(" ", 1)[0] or None
    status_field = " ".join(str(block.get("Status", "") or "").split())
    diag_field = " ".join(str(block.get("Diagnostic-Code", "") or "").split())
    dtype, _, said = diag_field.partition(";") if ";" in diag_field else ("", "", diag_field)
    said = said.strip()
    # A status comment ("5.2.1 (mailbox disabled)") is part of what was said; with no words at
    # all, the report's prose is all there is.
    comment = status_field.split(" ", 1)[1] if " " in status_field else ""
    return Entry(
        recipient=recipient,
        action=action,
        status=_status(find_status(status_field), find_status(said)),
        reply=find_reply(said),
        diagnostic=" ".join(x for x in (said, comment) if x) or " ".join(text.split()),
        stage=find_stage(said) or find_stage(text),
        mailer=dtype.strip().lower().startswith("x-unix"),
    )


def _status(field: str | None, said: str | None) -> str | None:
    """The Status field, unless it is a bare class (5.0.0) and the server said more (5.1.1)."""
    if field and said and field.endswith(".0.0") and said[0] == field[0]:
        return said
    return field or said
