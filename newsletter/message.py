"""Email -> MIME message: headers, List-Unsubscribe, Message-ID, DKIM. Pure.

One recipient per message. Header values come from the config and the digest, never raw:
the email package refuses CR/LF in them (header injection), ``render.subject`` already folds
a subject to one line, and display names are folded here the same way. A line break hidden
in an RFC 2047 encoded word counts as one (``header_text``), and both writers fold through
``_Policy``, which refuses to write a header with a line break or NUL from its value.

``build`` writes the MIME bytes itself: the email package's generator and its pure-Python
quoted-printable encoder cost milliseconds per digest, more than rendering it. A header
whose value is short printable ASCII is written as is; any other value (non-ASCII, long,
a quote or an encoded-word look-alike) goes through the email package's own header classes,
so folding, RFC 2047 encoding and the CR/LF refusal are the library's. Bodies are encoded
by ``qp`` (``binascii.b2a_qp`` line by line, with a cache: most lines of a digest, the layout
and the paper cards, are the same in every subscriber's email). ``build_with_email_package`` is the
reference the fast writer is tested against (and the benchmark's baseline).

``load_sender(config)`` is the edge of this stage: it reads the DKIM key file once per run,
the way ``render.make_env`` reads the templates. dkimpy stamps the signature's ``t=`` tag
with the current time itself; that is the one clock read below, and it is the library's.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import EmailPolicy, Policy
from email.utils import format_datetime, formataddr, parseaddr
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from newsletter.errors import ConfigError
from newsletter.models import Email
from newsletter.qp import body as _body
from newsletter.render import one_line

if TYPE_CHECKING:
    from newsletter.config import Config

#: Signed into ``h=``. Headers listed twice are "oversigned": a header of that name added
#: on the way (a second From, a forged List-Unsubscribe) breaks the signature.
DKIM_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
    "From",
    "Subject",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)


@dataclass(frozen=True, slots=True)
class DkimKey:
    selector: str
    domain: str
    private_key: bytes  # PEM, as dkimpy reads it


@dataclass(frozen=True, slots=True)
class Sender:
    """Who the messages are from, the list they belong to, and how they are signed."""

    from_header: str  # "Trending Papers <papers@example.org>"
    list_id: str  # "trending-papers.papers.example.org"
    list_name: str = ""  # the List-Id phrase: the newsletter's title
    bounce_address: str | None = None  # envelope sender (MAIL FROM); None: the From address
    dkim: DkimKey | None = None

    @property
    def address(self) -> str:
        return _address(self.from_header)

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def envelope_from(self) -> str:
        return self.bounce_address or self.address


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A built message: the bytes to send, and who to send them to.

    ``envelope_from`` is the SMTP ``MAIL FROM`` (it becomes the Return-Path): bounces go there.
    """

    recipient: str
    envelope_from: str
    message_id: str
    data: bytes
    email: Email


class _VerbatimHeader(UnstructuredHeader, BaseHeader):
    """A header written as given on one line: never folded, never RFC 2047-encoded or decoded.

    The email package encodes an unstructured value whose URL is longer than a line, which
    would make List-Unsubscribe unreadable to a mail client. 998 characters is the limit.
    A URL holds no encoded word: ``=?...?=`` in one stays as it is.
    """

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        super().parse(value, kwds)
        kwds["decoded"] = value

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


# A line break that is not a fold (CRLF, then a space or tab and more text), or a NUL.
_NOT_A_FOLD = re.compile(rb"\r(?!\n[ \t]*[^ \t\r\n])|(?<!\r)\n|\x00")


class _Policy(EmailPolicy):
    """The SMTP policy, refusing to write a header whose value holds CR, LF or NUL.

    Before Python 3.11.10 and 3.12.5 the email package decodes an RFC 2047 encoded word in a
    value and writes what it decodes as is: ``=?utf-8?q?=0D=0ABcc:_x?=`` becomes a Bcc
    header (CVE-2024-6923). Every header the package writes for us is folded here, in
    ``build`` and in ``build_with_email_package`` alike, on any Python.
    """

    def fold_binary(self, name: str, value: str) -> bytes:
        folded = super().fold_binary(name, value)
        # str(value) is the value as the package decoded it (the address of an Address is
        # not decoded there: the folded bytes show what it made of it).
        if (
            "\r" in str(value)
            or "\n" in str(value)
            or "\0" in str(value)
            or not folded.endswith(b"\r\n")
            or _NOT_A_FOLD.search(folded, 0, len(folded) - 2)
        ):
            raise ValueError(f"{name}: a line break or NUL in the value; not written")
        return folded


def _policy() -> _Policy:
    registry = HeaderRegistry()
    registry.map_to_type("list-unsubscribe", _VerbatimHeader)
    registry.map_to_type("list-unsubscribe-post", _VerbatimHeader)
    return _Policy(linesep="\r\n", header_factory=registry)


_POLICY = _policy()

# What ``one_line`` makes a space of: control characters (Cc) and line and paragraph separators.
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def header_text(value: str) -> str:
    """``one_line(value)``, also once RFC 2047 encoded words in it are decoded, however deep.

    The email package decodes an encoded word in a value it is given, and a line break inside
    one would reach the message (``_Policy``); a mail client decodes what the package writes
    once more. Such a value is replaced by its decoded text on one line, as ``one_line``
    treats a raw line break: the same bytes on every Python. Other values are kept as given.
    """
    value = text = one_line(value)
    while "=?" in text:
        decoded = str(_POLICY.header_factory("Subject", text))
        if len(decoded) >= len(text):
            break  # nothing to decode (an encoded word is longer than what it holds)
        if _LINE_BREAKING.search(decoded):
            value = text = one_line(decoded)
        else:
            text = decoded
    return value


@functools.lru_cache(maxsize=16)
def _address(from_header: str) -> str:
    return parseaddr(from_header)[1]


def message_id(sender: Sender, recipient: str, digest_key: str, paper_ids: Sequence[str]) -> str:
    """Stable per digest, recipient and papers, so a resent message is recognisably the same.

    Two different digests for the same day (a config change, a rerun with other papers)
    get different ids, so a mail client does not drop one as a duplicate.
    """
    material = "\0".join([digest_key, recipient.casefold(), *paper_ids])
    token = hashlib.sha256(material.encode()).hexdigest()[:32]
    return f"<{token}@{sender.domain}>"


def header_url(url: str) -> str:
    """A URL fit for a header: ASCII only (percent-encoded), no spaces or angle brackets."""
    return quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def _mailto(sender: Sender, subject: str) -> str:
    """The List-Unsubscribe mailto: a message to the From address with ``subject``
    (a test send's names its test token, so that a request made from it is known as one)."""
    return f"mailto:{sender.address}?subject={quote(subject, safe='')}"


def build(
    email: Email,
    sender: Sender,
    *,
    unsubscribe_url: str,
    digest_key: str,
    now: dt.datetime,
    html_parts: Sequence[str] | None = None,
    text_parts: Sequence[str] | None = None,
    mailto_subject: str = "unsubscribe",
) -> Outgoing:
    """The message as bytes: the same headers and parts as ``build_with_email_package``.

    ``html_parts`` and ``text_parts``, when given, are pieces whose joins are ``email.html``
    and ``email.text`` (``render.render_parts``): the encoded lines inside a piece are kept
    with the piece; the same bytes either way.
    """
    mid = message_id(sender, email.to, digest_key, email.paper_ids)
    to = _to_header(header_text(email.to_name or ""), email.to)
    mailto = _mailto(sender, mailto_subject)
    # The boundary cannot occur in a quoted-printable body: "=" is always encoded there.
    boundary = f"==============={mid[1:33]}=="
    head = b"".join(
        (
            _constant_header("From", sender.from_header),
            to,
            _header("Subject", header_text(email.subject)),
            _date_header(now),
            _header("Message-ID", mid),
            _constant_header("List-Id", f"{_list_phrase(sender)} <{sender.list_id}>"),
            _verbatim("List-Unsubscribe", f"<{header_url(unsubscribe_url)}>, <{mailto}>"),
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            b"Auto-Submitted: auto-generated\r\n"
            b"Precedence: bulk\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: multipart/alternative;\r\n"
            b' boundary="' + boundary.encode("ascii") + b'"\r\n',
        )
    )
    delimiter = b"\r\n--" + boundary.encode("ascii")
    data = b"".join(
        (
            head,
            delimiter,
            b'\r\nContent-Type: text/plain; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            _body(email.text, text_parts),
            delimiter,
            # The email package writes MIME-Version into the second part too; so do we.
            b'\r\nContent-Type: text/html; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\nMIME-Version: 1.0\r\n\r\n",
            _body(email.html, html_parts),
            delimiter,
            b"--\r\n",
        )
    )
    return _outgoing(email, sender, mid, data)


# A value written as is: printable ASCII words with single spaces, nothing the email package
# would quote, fold or encode ("=?" could be read as an encoded-word, a quote as a phrase).
_PLAIN_VALUE = re.compile(r"(?:[!#-<>-~]|=(?!\?))+(?: (?:[!#-<>-~]|=(?!\?))+)*")
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_ADDR_SPEC = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)
_MAX_LINE = 78  # the email package folds longer lines; leave those to it


def _header(name: str, value: str) -> bytes:
    line = f"{name}: {value}\r\n"
    if len(line) <= _MAX_LINE + 2 and _PLAIN_VALUE.fullmatch(value):
        return line.encode("ascii")
    return _POLICY.fold_binary(*_POLICY.header_store_parse(name, value))


@functools.lru_cache(maxsize=16)  # one ``now`` per run
def _date_header(now: dt.datetime) -> bytes:
    return _header("Date", format_datetime(now.astimezone(dt.UTC)))


@functools.lru_cache(maxsize=64)
def _constant_header(name: str, value: str) -> bytes:
    """A header that is the same in every message of a run (From, List-Id)."""
    return _POLICY.fold_binary(*_POLICY.header_store_parse(name, value))


def _to_header(display_name: str, address: str) -> bytes:
    simple_name = not display_name or (
        "=?" not in display_name and _ATOM_PHRASE.fullmatch(display_name)
    )
    if simple_name and _ADDR_SPEC.fullmatch(address):
        value = f"{display_name} <{address}>" if display_name else address
        line = f"To: {value}\r\n"
        if len(line) <= _MAX_LINE + 2:
            return line.encode("ascii")
    if display_name and _ADDR_SPEC.fullmatch(address):
        phrase = _encoded_phrase(display_name)
        if phrase is not None:
            line = f"To: {phrase} <{address}>\r\n"
            if len(line) <= _MAX_LINE + 2:
                return line.encode("ascii")
    to = Address(display_name=display_name, addr_spec=address)
    return _POLICY.fold_binary(*_POLICY.header_store_parse("To", to))


# A word of a name that is written encoded: no ASCII space, control or special character.
_ENCODED_WORD_TEXT = re.compile(r"[^\x00-\x20\x7f\"(),.:;<>@\[\]\\]+")


def _encoded_phrase(name: str) -> str | None:
    """The display name as the email package folds it onto one line, for a common kind of
    non-ASCII name ("Jörg Müller", "Ana Müller", "José de Sá"); None for anything else.

    The package encodes from the first word with non-ASCII to the last as one encoded word
    and leaves the words around them as they are; its header parser and folder cost ~300 us
    per name. Tested against the package with hypothesis.
    """
    words = name.split(" ")
    plain = [w.isascii() for w in words]
    if all(plain) or "" in words:
        return None
    for word, ascii_only in zip(words, plain, strict=True):
        if not (_ATOM_PHRASE if ascii_only else _ENCODED_WORD_TEXT).fullmatch(word):
            return None
    first = plain.index(False)
    last = len(plain) - plain[::-1].index(False)
    encoded = _encoded_word(" ".join(words[first:last]))
    return " ".join([*words[:first], encoded, *words[last:]])


# Bytes an RFC 2047 "Q" word holds as they are, as the email package writes one ("_": a space).
_Q_SAFE = frozenset(b"-!*+/" + string.ascii_letters.encode() + string.digits.encode())


def _encoded_word(text: str) -> str:
    """One UTF-8 encoded word as the email package writes it: "Q" unless "B" is at least
    5 characters shorter (the package leans towards "Q", which a reader can half read)."""
    data = text.encode("utf-8")
    q = "".join(chr(c) if c in _Q_SAFE else "_" if c == 0x20 else f"={c:02X}" for c in data)
    b = base64.b64encode(data).decode("ascii")
    return f"=?utf-8?q?{q}?=" if len(q) - len(b) < 5 else f"=?utf-8?b?{b}?="


def _verbatim(name: str, value: str) -> bytes:
    if "\r" in value or "\n" in value:  # cannot happen: header_url percent-encodes them
        raise ValueError(f"{name} may not contain CR or LF")
    if _PLAIN_VALUE.fullmatch(value):
        # What the email package writes for it (never folded, nothing to decode): without
        # its header parser, which cost ~40 us per message for List-Unsubscribe.
        return f"{name}: {value}\r\n".encode("ascii")
    return _POLICY.fold_binary(*_POLICY.header_store_parse(name, value))


def _outgoing(email: Email, sender: Sender, mid: str, data: bytes) -> Outgoing:
    """The final bytes (DKIM-signed when configured) with who they go to."""
    if sender.dkim is not None:
        data = sign(data, sender.dkim)
    return Outgoing(
        recipient=email.to,
        envelope_from=sender.envelope_from,
        message_id=mid,
        data=data,
        email=email,
    )


def build_with_email_package(
    email: Email,
    sender: Sender,
    *,
    unsubscribe_url: str,
    digest_key: str,
    now: dt.datetime,
    mailto_subject: str = "unsubscribe",
) -> Outgoing:
    """``build`` by way of ``email.message.EmailMessage``: slow, and the reference for tests."""
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = sender.from_header
    msg["To"] = Address(display_name=header_text(email.to_name or ""), addr_spec=email.to)
    msg["Subject"] = header_text(email.subject)
    msg["Date"] = format_datetime(now.astimezone(dt.UTC))
    mid = message_id(sender, email.to, digest_key, email.paper_ids)
    msg["Message-ID"] = mid
    msg["List-Id"] = f"{_list_phrase(sender)} <{sender.list_id}>"
    mailto = _mailto(sender, mailto_subject)
    # RFC 8058: the HTTPS URL takes a one-click POST; the mailto is for older clients.
    msg["List-Unsubscribe"] = f"<{header_url(unsubscribe_url)}>, <{mailto}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg["Precedence"] = "bulk"
    msg.set_content(email.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(email.html, subtype="html", charset="utf-8", cte="quoted-printable")
    data = msg.as_bytes()
    return _outgoing(email, sender, mid, data)


def sign(data: bytes, key: DkimKey) -> bytes:
    """Prepend a DKIM-Signature over the final bytes (relaxed/relaxed, rsa-sha256)."""
    import dkim  # here: a compose worker that does not sign starts ~50 ms sooner

    present = {
        m.group(1).lower()
        for m in re.finditer(rb"^([A-Za-z0-9-]+):", data.split(b"\r\n\r\n", 1)[0], re.M)
    }
    headers = [h.encode() for h in DKIM_HEADERS if h.lower().encode() in present]
    signature: bytes = dkim.sign(
        data,
        key.selector.encode(),
        key.domain.encode(),
        key.private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=headers,
        linesep=b"\r\n",
    )
    return signature + data


def _list_phrase(sender: Sender) -> str:
    """The List-Id phrase: the title when it is plain ASCII words, else the list label."""
    name = one_line(sender.list_name)
    if name and "=?" not in name and re.fullmatch(r"[A-Za-z0-9 !#$%&'*+/=?^_`{|}~-]+", name):
        return name
    return sender.list_id.split(".")[0]


def list_id(title: str, domain: str) -> str:
    slug = (
        "-".join("".join(c if c.isalnum() and c.isascii() else " " for c in title.lower()).split())
        or "newsletter"
    )
    return f"{slug}.{domain}"


def display_from(name: str, address: str) -> str:
    return formataddr((name, address))


def load_sender(config: Config) -> Sender:
    """The run's Sender from the config; reads and tries the DKIM key (I/O, once per run)."""
    settings = config.newsletter
    domain = settings.from_address.rpartition("@")[2]
    key: DkimKey | None = None
    if settings.dkim is not None:
        path = config.base_dir / settings.dkim.key_file
        where = f"{config.path}: newsletter.dkim.key_file"
        try:
            pem = path.read_bytes()
        except OSError as e:
            raise ConfigError(
                str(config.path), [f"{where}: cannot read {path}: {e.strerror or e}"]
            ) from e
        key = DkimKey(settings.dkim.selector, settings.dkim.domain, pem)
        try:
            sign(b"From: a@b.example\r\n\r\nkey check\r\n", key)
        except Exception as e:  # dkimpy raises several unrelated types for a bad key
            raise ConfigError(
                str(config.path), [f"{where}: {path} is not a usable DKIM private key: {e}"]
            ) from e
    return Sender(
        from_header=settings.from_,
        list_id=list_id(settings.title, domain),
        list_name=settings.title,
        bounce_address=config.smtp.bounce_address,
        dkim=key,
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
