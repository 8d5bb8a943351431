"""Email -> MIME message: headers, List-Unsubscribe, Message-ID, DKIM. Pure.

One recipient per message. ``Writer`` writes the MIME bytes itself: the email package's
generator and its pure-Python quoted-printable encoder cost milliseconds per digest, more
than rendering it. Its headers are ``headers``' fast writers, the same bytes as the
package's; its bodies are encoded by a ``qp.Encoder`` (``binascii.b2a_qp`` line by line,
cached: most lines of a digest, the layout and the paper cards, are the same in every
subscriber's email); what is the same in every message of a run (From, List-Id, Date) is
written once, when the writer is made. ``ReferenceWriter`` builds the same message with
``email.message.EmailMessage``: slow, the reference the fast writer is tested against (and
the benchmark's baseline).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import quote

from newsletter.compose.headers import (
    POLICY,
    folded,
    header,
    header_text,
    header_url,
    to_header,
    verbatim,
)
from newsletter.compose.masthead import Masthead
from newsletter.compose.qp import Encoder
from newsletter.models import Email, Outgoing


def message_id(
    masthead: Masthead, recipient: str, digest_key: str, paper_ids: Sequence[str]
) -> str:
    """Stable per digest, recipient and papers, so a resent message is recognisably the same.

    Two different digests for the same day (a config change, a rerun with other papers)
    get different ids, so a mail client does not drop one as a duplicate.
    """
    material = "\0".join([digest_key, recipient.casefold(), *paper_ids])
    token = hashlib.sha256(material.encode()).hexdigest()[:32]
    return f"<{token}@{masthead.domain}>"


def _mailto(masthead: Masthead, subject: str, to: str | None = None) -> str:
    """The List-Unsubscribe mailto: a message to ``to`` (the subscriber's tokenized unsubscribe
    address), else to the From address with ``subject`` (a test send's names its test token,
    so that a request made from it is known as one)."""
    return f"mailto:{to or masthead.address}?subject={quote(subject, safe='')}"


class Writer:
    """The message as bytes, written directly: the same as ``ReferenceWriter``'s."""

    def __init__(
        self, masthead: Masthead, now: dt.datetime, encoder: Encoder | None = None
    ) -> None:
        self.masthead = masthead
        self.encoder = encoder or Encoder()
        # The same in every message of the run.
        self.from_ = folded("From", masthead.from_header)
        self.date = header("Date", format_datetime(now.astimezone(dt.UTC)))
        self.list_id = folded("List-Id", f"{masthead.list_phrase} <{masthead.list_id}>")

    def write(
        self,
        email: Email,
        *,
        unsubscribe_url: str,
        digest_key: str,
        mailto_subject: str = "unsubscribe",
        html_parts: Sequence[str] | None = None,
        text_parts: Sequence[str] | None = None,
        envelope_from: str | None = None,
        mailto_to: str | None = None,
    ) -> Outgoing:
        """``html_parts`` and ``text_parts``, when given, are pieces whose joins are
        ``email.html`` and ``email.text``: the encoded lines inside a piece are kept with the
        piece; the same bytes either way."""
        masthead = self.masthead
        mid = message_id(masthead, email.to, digest_key, email.paper_ids)
        to = to_header(header_text(email.to_name or ""), email.to)
        mailto = _mailto(masthead, mailto_subject, mailto_to)
        # The boundary cannot occur in a quoted-printable body: "=" is always encoded there.
        boundary = f"==============={mid[1:33]}=="
        head = b"".join(
            (
                self.from_,
                to,
                header("Subject", header_text(email.subject)),
                self.date,
                header("Message-ID", mid),
                self.list_id,
                verbatim("List-Unsubscribe", f"<{header_url(unsubscribe_url)}>, <{mailto}>"),
                b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                b"Auto-Submitted: auto-generated\r\n"
                b"Precedence: bulk\r\n"
                b"MIME-Version: 1.0\r\n"
                b"Content-Type: multipart/alternative;\r\n"
                b' boundary="' + boundary.encode("ascii") + b'"\r\n',
            )
        )
        delimiter = b"\r\n--" + boundary.encode("ascii")
        body = self.encoder.body
        data = b"".join(
            (
                head,
                delimiter,
                b'\r\nContent-Type: text/plain; charset="utf-8"\r\n'
                b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
                body(email.text, text_parts),
                delimiter,
                # The email package writes MIME-Version into the second part too; so do we.
                b'\r\nContent-Type: text/html; charset="utf-8"\r\n'
                b"Content-Transfer-Encoding: quoted-printable\r\nMIME-Version: 1.0\r\n\r\n",
                body(email.html, html_parts),
                delimiter,
                b"--\r\n",
            )
        )
        return _outgoing(email, masthead, mid, data, envelope_from)


class ReferenceWriter:
    """``Writer`` by way of ``email.message.EmailMessage``: slow, the reference for tests."""

    def __init__(self, masthead: Masthead, now: dt.datetime) -> None:
        self.masthead = masthead
        self.now = now

    def write(
        self,
        email: Email,
        *,
        unsubscribe_url: str,
        digest_key: str,
        mailto_subject: str = "unsubscribe",
        html_parts: Sequence[str] | None = None,  # the fast writer's; not needed here
        text_parts: Sequence[str] | None = None,
        envelope_from: str | None = None,  # None: the masthead's
        mailto_to: str | None = None,  # None: the From address
    ) -> Outgoing:
        masthead = self.masthead
        msg = EmailMessage(policy=POLICY)
        msg["From"] = masthead.from_header
        msg["To"] = Address(display_name=header_text(email.to_name or ""), addr_spec=email.to)
        msg["Subject"] = header_text(email.subject)
        msg["Date"] = format_datetime(self.now.astimezone(dt.UTC))
        mid = message_id(masthead, email.to, digest_key, email.paper_ids)
        msg["Message-ID"] = mid
        msg["List-Id"] = f"{masthead.list_phrase} <{masthead.list_id}>"
        mailto = _mailto(masthead, mailto_subject, mailto_to)
        # RFC 8058: the HTTPS URL takes a one-click POST; the mailto is for older clients.
        msg["List-Unsubscribe"] = f"<{header_url(unsubscribe_url)}>, <{mailto}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg["Auto-Submitted"] = "auto-generated"
        msg["Precedence"] = "bulk"
        msg.set_content(email.text, subtype="plain", charset="utf-8", cte="quoted-printable")
        msg.add_alternative(email.html, subtype="html", charset="utf-8", cte="quoted-printable")
        return _outgoing(email, masthead, mid, msg.as_bytes(), envelope_from)


def html_size(html: str) -> int:
    """Bytes of the HTML part's body as the email package encodes it (the reference's size)."""
    part = EmailMessage(policy=POLICY)
    part.set_content(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return len(part.as_bytes().split(b"\r\n\r\n", 1)[1])


def _outgoing(
    email: Email, masthead: Masthead, mid: str, data: bytes, envelope_from: str | None = None
) -> Outgoing:
    """The final bytes (DKIM-signed when configured) with who they go to and from whom."""
    if masthead.dkim is not None:
        data = masthead.dkim.sign(data)
    return Outgoing(
        recipient=email.to,
        envelope_from=envelope_from or masthead.envelope_from,
        message_id=mid,
        data=data,
        email=email,
    )


def unfolded_headers(data: bytes) -> list[tuple[str, str]]:
    """The header fields of a message, unfolded: for tests and the preview gallery."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    fields: list[tuple[str, str]] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + line)
        elif line:
            name, _, value = line.partition(":")
            fields.append((name, value.strip()))
    return fields
