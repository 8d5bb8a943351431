"""Signed unsubscribe tokens: the subscriber's address plus an HMAC-SHA256 over it.

A token is ``base64url(address) "." base64url(hmac)``; verification is constant-time. The key
comes from the environment variable named by ``newsletter.secret_env`` and must be at least
``MIN_KEY_BYTES`` long (a short one is recovered from a single link by brute force); a preview
without a usable key uses a throwaway key (its links cannot be verified later, which a preview
never needs).

A test send (``send --test``) carries test tokens, ``test.`` then a token signed for another
purpose: a real token's check never accepts one, so a test copy's link cannot unsubscribe
anyone; the endpoint shows a page saying it was a test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets

log = logging.getLogger(__name__)

MIN_KEY_BYTES = 32
MAKE_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
TEST_PREFIX = "test."


def key_problem(env_name: str) -> str | None:
    """Why the key in ``$env_name`` cannot sign links (one line), or None when it can."""
    value = os.environ.get(env_name, "")
    if not value:
        return (
            f"${env_name} is not set; it holds the key that signs unsubscribe links "
            f"(at least {MIN_KEY_BYTES} bytes; make one with {MAKE_KEY})"
        )
    size = len(value.encode())
    if size < MIN_KEY_BYTES:
        return (
            f"${env_name} is too short ({size} byte{'s' if size != 1 else ''}; at least "
            f"{MIN_KEY_BYTES}): anyone could recover it from one unsubscribe link; "
            f"make one with {MAKE_KEY}"
        )
    return None


def key_from_env(env_name: str, *, preview: bool) -> bytes | None:
    """The signing key, or a throwaway one for a preview; None when a real send lacks a usable one."""
    problem = key_problem(env_name)
    if problem is None:
        return os.environ[env_name].encode()
    if preview:
        log.warning(
            "unsubscribe.throwaway_key env=%s (unsubscribe links in this preview will not verify): %s",
            env_name,
            problem,
        )
        return secrets.token_bytes(32)
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, identity: str, purpose: bytes) -> bytes:
    return hmac.new(key, purpose + identity.encode(), hashlib.sha256).digest()


def _purpose(test: bool) -> bytes:
    return b"unsubscribe-test:" if test else b"unsubscribe:"


def make_token(key: bytes, email: str, *, test: bool = False) -> str:
    """The token for ``email``; ``test=True``: a test copy's, which unsubscribes no one."""
    identity = email.casefold()
    token = f"{_b64(identity.encode())}.{_b64(_mac(key, identity, _purpose(test)))}"
    return TEST_PREFIX + token if test else token


def verify_token(key: bytes, token: str, *, test: bool = False) -> str | None:
    """The address a token was made for, or None when it is forged or malformed.

    The whole token is compared with the one this key makes for the address it names, in
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
    expected = make_token(key, identity, test=test).encode()
    if not hmac.compare_digest(expected, token.encode("utf-8", "replace")):
        return None
    return identity
