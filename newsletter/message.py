"""Email -> MIME message: headers, List-Unsubscribe, Message-ID. Pure.

One recipient per message. Header values come from the config and the digest, never raw:
the email package refuses CR/LF in them (header injection), and ``render.subject`` already
folds a subject to one line.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, parseaddr

from newsletter.models import Email


@dataclass(frozen=True, slots=True)
class Sender:
    """Who the messages are from, and the list they belong to."""

    from_header: str  # "Trending Papers <papers@example.org>"
    list_id: str  # "trending-papers.papers.example.org"

    @property
    def address(self) -> str:
        return parseaddr(self.from_header)[1]

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A built message: the bytes to send, and who to send them to."""

    recipient: str
    message_id: str
    data: bytes
    email: Email
    envelope_from: str = ""  # MAIL FROM (Return-Path): where bounces go


def message_id(sender: Sender, recipient: str, digest_key: str) -> str:
    """Stable per digest and recipient, so a resent message is recognisably the same one."""
    token = hashlib.sha256(f"{digest_key}\0{recipient.casefold()}".encode()).hexdigest()[:32]
    return f"<{token}@{sender.domain}>"


def build(
    email: Email,
    sender: Sender,
    *,
    unsubscribe_url: str,
    digest_key: str,
    now: dt.datetime,
) -> Outgoing:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender.from_header
    msg["To"] = Address(display_name=email.to_name or "", addr_spec=email.to)
    msg["Subject"] = email.subject
    msg["Date"] = format_datetime(now.astimezone(dt.UTC))
    mid = message_id(sender, email.to, digest_key)
    msg["Message-ID"] = mid
    msg["List-Id"] = f"{sender.list_id.split('.')[0]} <{sender.list_id}>"
    mailto = f"mailto:{sender.address}?subject=unsubscribe"
    msg["List-Unsubscribe"] = f"<{unsubscribe_url}>, <{mailto}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg["Precedence"] = "bulk"
    msg.set_content(email.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(email.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return Outgoing(
        recipient=email.to,
        message_id=mid,
        data=msg.as_bytes(),
        email=email,
        envelope_from=sender.address,
    )


def list_id(title: str, domain: str) -> str:
    slug = (
        "-".join("".join(c if c.isalnum() else " " for c in title.lower()).split()) or "newsletter"
    )
    return f"{slug}.{domain}"


def display_from(name: str, address: str) -> str:
    return formataddr((name, address))
