"""Signed unsubscribe tokens: the subscriber's address plus an HMAC-SHA256 over it.

A token is ``base64url(address) "." base64url(hmac)``; verification is constant-time. The key
comes from the environment variable named by ``newsletter.secret_env``; a preview without it
uses a throwaway key (its links cannot be verified later, which a preview never needs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets

log = logging.getLogger(__name__)


def key_from_env(env_name: str, *, preview: bool) -> bytes | None:
    """The signing key, or a throwaway one for a preview; None when a real send lacks it."""
    value = os.environ.get(env_name, "")
    if value:
        return value.encode()
    if preview:
        log.warning(
            "unsubscribe.throwaway_key env=%s (unsubscribe links in this preview will not verify)",
            env_name,
        )
        return secrets.token_bytes(32)
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, identity: str) -> bytes:
    return hmac.new(key, b"unsubscribe:" + identity.encode(), hashlib.sha256).digest()


def make_token(key: bytes, email: str) -> str:
    identity = email.casefold()
    return f"{_b64(identity.encode())}.{_b64(_mac(key, identity))}"


def verify_token(key: bytes, token: str) -> str | None:
    """The address a token was made for, or None when it is forged or malformed.

    The whole token is compared with the one this key makes for the address it names, in
    constant time; so a token is accepted only in its one canonical spelling.
    """
    ident_part = token.split(".", 1)[0]
    try:
        identity = _unb64(ident_part).decode()
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        return None
    expected = make_token(key, identity).encode()
    if not hmac.compare_digest(expected, token.encode("utf-8", "replace")):
        return None
    return identity
