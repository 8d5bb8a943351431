"""Header fields written fast, each the same bytes as the email package writes. Pure.

Header values come from the config and the digest, never raw: the email package refuses
CR/LF in them (header injection), ``one_line`` folds a subject or a display name to one line,
and a line break hidden in an RFC 2047 encoded word counts as one (``header_text``). Every
header the package writes for us folds through ``POLICY``, which refuses to write a header
with a line break or NUL from its value.

A value that is short printable ASCII is written as is (``header``, ``to_header``,
``verbatim``); a common kind of non-ASCII display name is encoded here (``encoded_phrase``);
any other value goes through the email package's own header classes, so folding, RFC 2047
encoding and the CR/LF refusal are the library's. Each fast writer is tested against
``POLICY`` folding the same value.
"""

from __future__ import annotations

import base64
import re
import string
import unicodedata
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.policy import EmailPolicy, Policy
from typing import Any
from urllib.parse import quote


def one_line(text: str) -> str:
    """Whitespace runs (CR, LF, U+2028 ...) to one space, control characters dropped."""
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text  # nothing to do, the common case (isprintable: no Cc, Zl, Zp, no tab)
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    return " ".join(text.split())


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
    the fast writer and in the reference alike, on any Python.
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


#: How both writers have the email package fold a header (and the reference, a message).
POLICY = _policy()

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
        decoded = str(POLICY.header_factory("Subject", text))
        if len(decoded) >= len(text):
            break  # nothing to decode (an encoded word is longer than what it holds)
        if _LINE_BREAKING.search(decoded):
            value = text = one_line(decoded)
        else:
            text = decoded
    return value


def header_url(url: str) -> str:
    """A URL fit for a header: ASCII only (percent-encoded), no spaces or angle brackets."""
    return quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def folded(name: str, value: str | Address) -> bytes:
    """The header as the email package folds it."""
    return POLICY.fold_binary(*POLICY.header_store_parse(name, value))


# A value written as is: printable ASCII words with single spaces, nothing the email package
# would quote, fold or encode ("=?" could be read as an encoded-word, a quote as a phrase).
_PLAIN_VALUE = re.compile(r"(?:[!#-<>-~]|=(?!\?))+(?: (?:[!#-<>-~]|=(?!\?))+)*")
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_ADDR_SPEC = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)
_MAX_LINE = 78  # the email package folds longer lines; leave those to it


def header(name: str, value: str) -> bytes:
    """``folded(name, value)``, written directly when the value is short plain ASCII."""
    line = f"{name}: {value}\r\n"
    if len(line) <= _MAX_LINE + 2 and _PLAIN_VALUE.fullmatch(value):
        return line.encode("ascii")
    return folded(name, value)


def to_header(display_name: str, address: str) -> bytes:
    """The To field as the email package folds an ``Address`` of these."""
    simple_name = not display_name or (
        "=?" not in display_name and _ATOM_PHRASE.fullmatch(display_name)
    )
    if simple_name and _ADDR_SPEC.fullmatch(address):
        value = f"{display_name} <{address}>" if display_name else address
        line = f"To: {value}\r\n"
        if len(line) <= _MAX_LINE + 2:
            return line.encode("ascii")
    if display_name and _ADDR_SPEC.fullmatch(address):
        phrase = encoded_phrase(display_name)
        if phrase is not None:
            line = f"To: {phrase} <{address}>\r\n"
            if len(line) <= _MAX_LINE + 2:
                return line.encode("ascii")
    return folded("To", Address(display_name=display_name, addr_spec=address))


# A word of a name that is written encoded: no ASCII space, control or special character.
_ENCODED_WORD_TEXT = re.compile(r"[^\x00-\x20\x7f\"(),.:;<>@\[\]\\]+")


def encoded_phrase(name: str) -> str | None:
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


def verbatim(name: str, value: str) -> bytes:
    """A List-Unsubscribe header as the email package writes it (never folded or encoded)."""
    if "\r" in value or "\n" in value:  # cannot happen: header_url percent-encodes them
        raise ValueError(f"{name} may not contain CR or LF")
    if _PLAIN_VALUE.fullmatch(value):
        # What the email package writes for it (never folded, nothing to decode): without
        # its header parser, which cost ~40 us per message for List-Unsubscribe.
        return f"{name}: {value}\r\n".encode("ascii")
    return folded(name, value)
