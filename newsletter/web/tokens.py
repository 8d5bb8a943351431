"""Signed tokens for links that reveal nothing, and the keys that sign them.

A token is one URL-safe string, base64url without padding, of::

    version (1) | purpose (1) | expires (4, Unix seconds; 0: never) | subscriber id | HMAC (16)

The HMAC-SHA256 (first 16 bytes) covers everything before it, so a token names a
subscriber's opaque id (``SubscriberRecord.id``, random), what it may do (confirm, manage,
unsubscribe, or ``test``: a test copy's links, which change nothing) and, for a
confirmation, until when, and never the address. ``read_token`` accepts a token only in its
one canonical spelling, for the purpose asked and before its expiry; the MAC is compared in
constant time. A forged, altered, truncated or expired token reads as None.

The keys come from the environment variable named by ``newsletter.secret_env``: one or more,
separated by spaces, each at least ``MIN_KEY_BYTES`` long (a short one is recovered from a
single link by brute force). The first signs; every one verifies, so an operator rotates the
key by putting the new one first and removes the old one when its links may go. A preview
without usable keys uses a throwaway key (its links cannot be verified later, which a
preview never needs).

Links in mail sent before (``base64url(address) "." base64url(HMAC)``, and ``test.`` before
one for a test copy) keep working: ``read_legacy_token``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import logging
import os
import re
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

MIN_KEY_BYTES = 32
MAKE_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
TEST_PREFIX = "test."

#: What a token lets its holder do; ``test``: a test copy's link, which changes nothing.
Purpose = Literal["confirm", "manage", "unsubscribe", "test"]
PURPOSES: dict[Purpose, bytes] = {
    "confirm": b"c",
    "manage": b"m",
    "unsubscribe": b"u",
    "test": b"t",
}
_VERSION = b"\x02"
_MAC_BYTES = 16
_HEAD = struct.Struct(">cc I")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

#: The signing keys, the first signs; a single ``bytes`` is one key.
Keys = bytes | Sequence[bytes]


@dataclass(frozen=True, slots=True)
class TokenClaim:
    """What a genuine token says: made by ``read_token``, read by the web pages."""

    purpose: Purpose
    subscriber_id: str
    expires: dt.datetime | None


def _key_list(keys: Keys) -> tuple[bytes, ...]:
    found = (keys,) if isinstance(keys, bytes) else tuple(keys)
    if not found:
        raise ValueError("no signing key")
    return found


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, b"newsletter-token:" + body, hashlib.sha256).digest()[:_MAC_BYTES]


def make_token(
    keys: Keys, purpose: Purpose, subscriber_id: str, *, expires: dt.datetime | None = None
) -> str:
    """The token letting its holder ``purpose`` for the subscriber ``subscriber_id`` (until
    ``expires``, to the second), signed with the first key."""
    if not _ID_RE.match(subscriber_id):
        raise ValueError(f"not a subscriber id: {subscriber_id!r}")
    stamp = 0 if expires is None else max(1, int(expires.timestamp()))
    body = _HEAD.pack(_VERSION, PURPOSES[purpose], stamp) + subscriber_id.encode("ascii")
    return _b64(body + _mac(_key_list(keys)[0], body))


def read_token(keys: Keys, token: str, purpose: Purpose, now: dt.datetime) -> TokenClaim | None:
    """What a genuine ``purpose`` token says, or None: forged, altered, truncated, another
    purpose's, expired at ``now``, or not in its canonical spelling."""
    if not 0 < len(token) <= 200 or not token.isascii():
        return None
    try:
        raw = _unb64(token)
    except (ValueError, binascii.Error):
        return None
    if len(raw) <= _HEAD.size + _MAC_BYTES or _b64(raw) != token:
        return None
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if not any(hmac.compare_digest(_mac(key, body), mac) for key in _key_list(keys)):
        return None
    version, kind, stamp = _HEAD.unpack_from(body)
    if version != _VERSION or kind != PURPOSES[purpose]:
        return None
    expires = None if stamp == 0 else dt.datetime.fromtimestamp(stamp, dt.UTC)
    if expires is not None and now >= expires:
        return None
    subscriber_id = body[_HEAD.size :].decode("ascii", "replace")
    if not _ID_RE.match(subscriber_id):
        return None
    return TokenClaim(purpose, subscriber_id, expires)


# -- the tokens of mail sent before: the address in base64, and its HMAC ----------------------


def _legacy_mac(key: bytes, identity: str, test: bool) -> bytes:
    purpose = b"unsubscribe-test:" if test else b"unsubscribe:"
    return hmac.new(key, purpose + identity.encode(), hashlib.sha256).digest()


def legacy_token(key: bytes, email: str, *, test: bool = False) -> str:
    """The unsubscribe token mail carried before subscribers had ids (tests make old mail
    with it; nothing sends it any more)."""
    identity = email.casefold()
    token = f"{_b64(identity.encode())}.{_b64(_legacy_mac(key, identity, test))}"
    return TEST_PREFIX + token if test else token


def read_legacy_token(keys: Keys, token: str, *, test: bool = False) -> str | None:
    """The address an old unsubscribe token names, or None when it is forged or malformed.

    The whole token is compared with the one each key makes for the address it names, in
    constant time; so a token is accepted only in its one canonical spelling. A test token
    is accepted only with ``test=True``, a real one only without.
    """
    body = token
    if test:
        if not token.startswith(TEST_PREFIX):
            return None
        body = token[len(TEST_PREFIX) :]
    ident_part = body.split(".", 1)[0]
    try:
        identity = _unb64(ident_part).decode()
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        return None
    given = token.encode("utf-8", "replace")
    for key in _key_list(keys):
        if hmac.compare_digest(legacy_token(key, identity, test=test).encode(), given):
            return identity
    return None


# -- the keys ------------------------------------------------------------------------------


def key_problem(env_name: str) -> str | None:
    """Why the keys in ``$env_name`` cannot sign links (one line, never a key), or None."""
    keys = os.environ.get(env_name, "").split()
    if not keys:
        return (
            f"${env_name} is not set; it holds the key that signs the links in every email "
            f"(at least {MIN_KEY_BYTES} bytes; make one with {MAKE_KEY})"
        )
    for number, key in enumerate(keys, start=1):
        size = len(key.encode())
        if size < MIN_KEY_BYTES:
            which = (
                f"key {number} of {len(keys)} in ${env_name}" if len(keys) > 1 else f"${env_name}"
            )
            return (
                f"{which} is too short ({size} byte{'s' if size != 1 else ''}; at least "
                f"{MIN_KEY_BYTES}): anyone could recover it from one link; "
                f"make one with {MAKE_KEY}"
            )
    return None


def keys_from_env(env_name: str, *, preview: bool) -> tuple[bytes, ...] | None:
    """The keys (the first signs), or a throwaway one for a preview; None when a real send
    lacks usable ones."""
    problem = key_problem(env_name)
    if problem is None:
        return tuple(key.encode() for key in os.environ[env_name].split())
    if preview:
        log.warning(
            "tokens.throwaway_key env=%s (the links in this preview will not verify): %s",
            env_name,
            problem,
        )
        return (secrets.token_bytes(32),)
    return None


def key_from_env(env_name: str, *, preview: bool) -> bytes | None:
    """The signing key (the first of ``keys_from_env``)."""
    keys = keys_from_env(env_name, preview=preview)
    return None if keys is None else keys[0]
