"""Tokenized envelope addresses: who a bounce is about, who a mailto unsubscribe is from.

``bounces+<token>@example.org`` (VERP) names a run and a subscriber; ``unsubscribe+<token>@...``
names a subscriber. A token is base32 in lowercase without padding (mail systems may fold the
case of a local part, so only letters and digits) of::

    version (1 byte) | the ids (varints, a tagged subscriber key) | HMAC-SHA256 (first 10 bytes)

The subscriber is an opaque key the caller chooses (a row id, a keyed hash), never the address
itself: a bounce or a mail log then reveals nothing. Room is short: with ``bounces@`` as the
base, integer ids always fit and a string key of up to 12 bytes does (longer ones raise). The MAC covers the purpose too, so a VERP
token never passes as an unsubscribe token. A forged, altered or truncated token reads as None;
the MAC is compared in constant time. Local parts stay within 64 octets (RFC 5321).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

SubscriberKey = int | str

#: The local part of the unsubscribe address, on the bounce address's domain.
UNSUBSCRIBE_LOCAL = "unsubscribe"
MAX_LOCAL_PART = 64  # octets, RFC 5321 section 4.5.3.1.1
MAC_BYTES = 10  # 80 bits
_VERSION = 1
_INT, _STR = 0, 1  # how the subscriber key is written


@dataclass(frozen=True, slots=True)
class Verp:
    """What a VERP address names. Made by ``parse_verp``; read by the inbound wiring."""

    run_id: int
    subscriber: SubscriberKey


def verp_address(bounce_address: str, run_id: int, subscriber: SubscriberKey, key: bytes) -> str:
    """``bounces+<token>@domain`` for one message of one run to one subscriber."""
    if isinstance(run_id, bool) or not isinstance(run_id, int) or run_id < 0:
        raise ValueError(f"run id must be an integer >= 0, not {run_id!r}")
    return _address(bounce_address, b"verp", _varint(run_id) + _subscriber(subscriber), key)


def parse_verp(address: str, key: bytes) -> Verp | None:
    """The run and subscriber a VERP address names; None unless its token is genuine."""
    payload = _payload(address, b"verp", key)
    if payload is None:
        return None
    run = _read_varint(payload, 0)
    if run is None:
        return None
    run_id, at = run
    subscriber = _read_subscriber(payload, at)
    return None if subscriber is None else Verp(run_id, subscriber)


def unsubscribe_address(base: str, subscriber: SubscriberKey, key: bytes) -> str:
    """``unsubscribe+<token>@domain``, the ``mailto:`` of one subscriber's List-Unsubscribe."""
    return _address(base, b"unsubscribe", _subscriber(subscriber), key)


def parse_unsubscribe(address: str, key: bytes) -> SubscriberKey | None:
    """The subscriber an unsubscribe address names; None unless its token is genuine."""
    payload = _payload(address, b"unsubscribe", key)
    return None if payload is None else _read_subscriber(payload, 0)


# --- the token -------------------------------------------------------------------------------


def _mac(key: bytes, purpose: bytes, payload: bytes) -> bytes:
    return hmac.new(key, purpose + b"\0" + payload, hashlib.sha256).digest()[:MAC_BYTES]


def _address(base: str, purpose: bytes, ids: bytes, key: bytes) -> str:
    local, at, domain = base.rpartition("@")
    if not (local and at and domain) or any(c.isspace() for c in base):
        raise ValueError(f"{base!r} is not an address like name@example.org")
    payload = bytes([_VERSION]) + ids
    token = base64.b32encode(payload + _mac(key, purpose, payload)).decode("ascii")
    tokenized = f"{local}+{token.rstrip('=').lower()}"
    if len(tokenized.encode()) > MAX_LOCAL_PART:
        raise ValueError(
            f"{tokenized}@{domain}: the local part is {len(tokenized.encode())} octets, "
            f"more than {MAX_LOCAL_PART}; use a shorter base address or subscriber key"
        )
    return f"{tokenized}@{domain}"


def _payload(address: str, purpose: bytes, key: bytes) -> bytes | None:
    """The genuine payload of an address's token, or None."""
    local = address.strip().strip("<>").rpartition("@")[0]
    token = local.rpartition("+")[2].lower()
    if not token or len(token) > MAX_LOCAL_PART or not token.isascii() or not token.isalnum():
        return None
    try:
        raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except (binascii.Error, ValueError):
        return None
    payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if len(payload) < 2 or not hmac.compare_digest(mac, _mac(key, purpose, payload)):
        return None
    if base64.b32encode(raw).decode("ascii").rstrip("=").lower() != token:
        return None  # the one canonical spelling only (base32 leaves spare bits at the end)
    return payload[1:] if payload[0] == _VERSION else None


def _subscriber(subscriber: SubscriberKey) -> bytes:
    if isinstance(subscriber, bool):
        raise ValueError("a subscriber key is an int or a str, not a bool")
    if isinstance(subscriber, int):
        if subscriber < 0:
            raise ValueError(f"an integer subscriber key must be >= 0, not {subscriber}")
        return bytes([_INT]) + _varint(subscriber)
    if isinstance(subscriber, str) and "@" in subscriber:
        # base32 hides nothing: the address would be readable in every bounce and mail log
        raise ValueError(
            "a subscriber key is an opaque id (a row id, a keyed hash), not an address"
        )
    if isinstance(subscriber, str) and subscriber:
        return bytes([_STR]) + subscriber.encode()
    raise ValueError(f"a subscriber key is a non-empty str or an int >= 0, not {subscriber!r}")


def _read_subscriber(data: bytes, at: int) -> SubscriberKey | None:
    if at >= len(data):
        return None
    tag, rest = data[at], at + 1
    if tag == _INT:
        value = _read_varint(data, rest)
        return value[0] if value is not None and value[1] == len(data) else None
    if tag == _STR and rest < len(data):
        try:
            return data[rest:].decode()
        except UnicodeDecodeError:
            return None
    return None


def _varint(n: int) -> bytes:
    """LEB128: seven bits a byte, the high bit set on all but the last."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int] | None:
    """The varint at ``at`` and where it ends; None if it runs off the end."""
    value = shift = 0
    while at < len(data) and shift <= 63:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
    return None
