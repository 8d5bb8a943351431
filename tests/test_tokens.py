from __future__ import annotations

import base64
import datetime as dt
import hmac
import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.web import tokens

KEY = b"k" * 32


NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
OTHER_KEY = b"o" * 32
SID = "Zq3-x_9Ab0cD"


def test_a_token_names_an_id_and_a_purpose_and_never_the_address() -> None:
    token = tokens.make_token(KEY, "manage", SID)
    claim = tokens.read_token(KEY, token, "manage", NOW)
    assert claim == tokens.TokenClaim("manage", SID, None)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token) and len(token) <= 60  # URL-safe and short
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"@" not in raw and SID.encode() in raw  # the opaque id, nothing else of theirs


@pytest.mark.parametrize("purpose", ["confirm", "unsubscribe", "test"])
def test_a_token_is_good_for_its_purpose_only(purpose: tokens.Purpose) -> None:
    token = tokens.make_token(KEY, purpose, SID)
    assert tokens.read_token(KEY, token, purpose, NOW) is not None
    for other in ("confirm", "manage", "unsubscribe", "test"):
        if other != purpose:
            assert tokens.read_token(KEY, token, other, NOW) is None  # type: ignore[arg-type]


def test_forged_altered_and_truncated_tokens_read_as_nothing() -> None:
    token = tokens.make_token(KEY, "unsubscribe", SID)
    assert tokens.read_token(OTHER_KEY, token, "unsubscribe", NOW) is None
    for i in range(len(token)):  # every character changed, one at a time
        flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        assert tokens.read_token(KEY, flipped, "unsubscribe", NOW) is None, i
    for cut in range(len(token)):
        assert tokens.read_token(KEY, token[:cut], "unsubscribe", NOW) is None, cut
    assert tokens.read_token(KEY, token + "A", "unsubscribe", NOW) is None
    assert tokens.read_token(KEY, token + "=", "unsubscribe", NOW) is None  # another spelling
    # Another purpose under a MAC of its own: the purpose is inside what the MAC covers.
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[1:2] = b"m"
    relabelled = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert tokens.read_token(KEY, relabelled, "manage", NOW) is None


def test_a_confirmation_expires() -> None:
    expires = NOW + dt.timedelta(hours=48)
    token = tokens.make_token(KEY, "confirm", SID, expires=expires)
    claim = tokens.read_token(KEY, token, "confirm", NOW + dt.timedelta(hours=47, minutes=59))
    assert claim is not None and claim.expires == expires
    assert tokens.read_token(KEY, token, "confirm", expires) is None
    assert tokens.read_token(KEY, token, "confirm", NOW + dt.timedelta(days=30)) is None


def test_keys_rotate_the_first_signs_every_one_verifies() -> None:
    old = tokens.make_token(OTHER_KEY, "manage", SID)
    rotated = (KEY, OTHER_KEY)  # the new key first, the old one still accepted
    new = tokens.make_token(rotated, "manage", SID)
    assert new == tokens.make_token(KEY, "manage", SID)
    assert tokens.read_token(rotated, old, "manage", NOW) is not None
    assert tokens.read_token(rotated, new, "manage", NOW) is not None
    assert tokens.read_token((KEY,), old, "manage", NOW) is None  # the old key removed
    legacy = tokens.legacy_token(OTHER_KEY, "ada@example.org")
    assert tokens.read_legacy_token(rotated, legacy) == "ada@example.org"
    assert tokens.read_legacy_token(KEY, legacy) is None


@given(st.text(max_size=300))
def test_reading_never_raises(token: str) -> None:
    for purpose in ("confirm", "manage", "unsubscribe", "test"):
        assert tokens.read_token(KEY, token, purpose, NOW) is None  # type: ignore[arg-type]
    assert tokens.read_legacy_token(KEY, token) is None


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, "ada@example.org", "é"])
def test_only_an_opaque_id_can_be_signed(bad: str) -> None:
    with pytest.raises(ValueError, match="not a subscriber id"):
        tokens.make_token(KEY, "manage", bad)


def test_the_mac_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    token = tokens.make_token(KEY, "unsubscribe", SID)
    assert tokens.read_token(KEY, token, "unsubscribe", NOW) is not None
    assert len(calls) == 1


# -- the links in mail sent before: the address in base64 and its HMAC --------------------


def test_an_old_link_keeps_working() -> None:
    token = tokens.legacy_token(KEY, "Ada@Example.org")
    assert tokens.read_legacy_token(KEY, token) == "ada@example.org"
    assert token == tokens.legacy_token(KEY, "ada@example.org")  # identity is case-blind
    # What the code before this change made, byte for byte (base64 address "." HMAC).
    mac = hmac.new(KEY, b"unsubscribe:ada@example.org", "sha256").digest()
    assert token == "YWRhQGV4YW1wbGUub3Jn." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    # An old token is no new one, and a new one no old one.
    assert tokens.read_token(KEY, token, "unsubscribe", NOW) is None
    assert tokens.read_legacy_token(KEY, tokens.make_token(KEY, "unsubscribe", SID)) is None


def test_forged_or_foreign_old_tokens_are_refused() -> None:
    token = tokens.legacy_token(KEY, "ada@example.org")
    ident, mac = token.split(".")
    other = tokens.legacy_token(KEY, "eve@example.org")
    assert tokens.read_legacy_token(b"another key", token) is None
    assert tokens.read_legacy_token(KEY, f"{other.split('.')[0]}.{mac}") is None
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    assert tokens.read_legacy_token(KEY, f"{ident}.{flipped}") is None
    # Another spelling of the same bytes (padding, junk characters) is not accepted.
    assert tokens.read_legacy_token(KEY, f"{ident}==.{mac}") is None
    assert tokens.read_legacy_token(KEY, f"{ident}.{mac}!") is None


@pytest.mark.parametrize(
    "token", ["", ".", "abc", "a.b.c", "!!!.???", "é.é", "\x00.\x00", "YWRh", "YWRh."]
)
def test_malformed_old_tokens_are_refused(token: str) -> None:
    assert tokens.read_legacy_token(KEY, token) is None


def test_an_old_test_token_is_never_a_real_one() -> None:
    """An old test send's links cannot unsubscribe anyone: each kind verifies only as itself."""
    test = tokens.legacy_token(KEY, "Ada@Example.org", test=True)
    real = tokens.legacy_token(KEY, "ada@example.org")
    assert test.startswith("test.") and test.split(".", 1)[1] != real
    assert tokens.read_legacy_token(KEY, test) is None
    assert tokens.read_legacy_token(KEY, test, test=True) == "ada@example.org"
    assert tokens.read_legacy_token(KEY, real, test=True) is None
    assert tokens.read_legacy_token(KEY, "test." + real, test=True) is None  # relabelled
    assert tokens.read_legacy_token(b"another key" * 3, test, test=True) is None


def test_key_from_env(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NL_TEST_SECRET", "s" * 32)
    assert tokens.key_from_env("NL_TEST_SECRET", preview=False) == b"s" * 32
    monkeypatch.delenv("NL_TEST_SECRET")
    assert tokens.key_from_env("NL_TEST_SECRET", preview=False) is None
    assert caplog.records == []
    caplog.set_level(logging.WARNING)
    first = tokens.key_from_env("NL_TEST_SECRET", preview=True)
    second = tokens.key_from_env("NL_TEST_SECRET", preview=True)
    assert first and second and first != second and len(first) >= 32
    assert "tokens.throwaway_key env=NL_TEST_SECRET" in caplog.text
    assert all(r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("value", ["a", "s3cret", "x" * 31, "é" * 15])
def test_a_short_key_is_refused_with_how_to_make_one(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("NL_TEST_SECRET", value)
    problem = tokens.key_problem("NL_TEST_SECRET")
    assert problem is not None and problem.startswith("$NL_TEST_SECRET is too short")
    assert "python -c 'import secrets; print(secrets.token_urlsafe(32))'" in problem
    assert tokens.key_from_env("NL_TEST_SECRET", preview=False) is None
    throwaway = tokens.key_from_env("NL_TEST_SECRET", preview=True)
    assert throwaway is not None and throwaway != value.encode()  # never signs with it
    monkeypatch.setenv("NL_TEST_SECRET", "x" * 32)
    assert tokens.key_problem("NL_TEST_SECRET") is None


def test_the_readme_says_how_to_make_a_key_right_after_its_first_commands() -> None:
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    after_first_block = readme.split("```", 2)[2].lstrip("\n").split("\n\n", 1)[0]
    assert "NEWSLETTER_SECRET" in after_first_block
    assert tokens.MAKE_KEY in after_first_block.replace("\n", " ")


def test_several_keys_each_at_least_32_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NL_TEST_SECRET", f"{'n' * 32}  {'o' * 40}\n")
    assert tokens.key_problem("NL_TEST_SECRET") is None
    assert tokens.keys_from_env("NL_TEST_SECRET", preview=False) == (b"n" * 32, b"o" * 40)
    assert tokens.key_from_env("NL_TEST_SECRET", preview=False) == b"n" * 32  # signs
    monkeypatch.setenv("NL_TEST_SECRET", f"{'n' * 32} short")
    problem = tokens.key_problem("NL_TEST_SECRET")
    assert problem is not None and problem.startswith(
        "key 2 of 2 in $NL_TEST_SECRET is too short (5 bytes; at least 32)"
    )
    assert "short" not in problem.replace("too short", "")  # never the key itself
    assert tokens.keys_from_env("NL_TEST_SECRET", preview=False) is None
