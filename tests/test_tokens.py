from __future__ import annotations

import hmac
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.web import tokens

KEY = b"k" * 32


def test_roundtrip_gives_the_address_back() -> None:
    token = tokens.make_token(KEY, "Ada@Example.org")
    assert tokens.verify_token(KEY, token) == "ada@example.org"
    assert token == tokens.make_token(KEY, "ada@example.org")  # identity is case-blind
    assert "=" not in token and "/" not in token and "+" not in token  # URL-safe as is


def test_forged_or_foreign_tokens_are_refused() -> None:
    token = tokens.make_token(KEY, "ada@example.org")
    ident, mac = token.split(".")
    other = tokens.make_token(KEY, "eve@example.org")
    assert tokens.verify_token(b"another key", token) is None
    assert tokens.verify_token(KEY, f"{other.split('.')[0]}.{mac}") is None
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    assert tokens.verify_token(KEY, f"{ident}.{flipped}") is None
    # Another spelling of the same bytes (padding, junk characters) is not accepted.
    assert tokens.verify_token(KEY, f"{ident}==.{mac}") is None
    assert tokens.verify_token(KEY, f"{ident}.{mac}!") is None


@pytest.mark.parametrize(
    "token", ["", ".", "abc", "a.b.c", "!!!.???", "é.é", "\x00.\x00", "YWRh", "YWRh."]
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert tokens.verify_token(KEY, token) is None


@given(st.text())
def test_verify_never_raises(token: str) -> None:
    assert tokens.verify_token(KEY, token) is None


def test_verification_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """No timing measurement (too flaky): check that the comparison is hmac.compare_digest."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    token = tokens.make_token(KEY, "ada@example.org")
    assert tokens.verify_token(KEY, token) == "ada@example.org"
    assert tokens.verify_token(KEY, token[:-2] + "xx") is None
    assert len(calls) == 2 and calls[0] == (token.encode(), token.encode())


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
    assert "unsubscribe.throwaway_key env=NL_TEST_SECRET" in caplog.text
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_a_test_token_is_never_a_real_one() -> None:
    """A test send's links cannot unsubscribe anyone: each kind verifies only as itself."""
    test = tokens.make_token(KEY, "Ada@Example.org", test=True)
    real = tokens.make_token(KEY, "ada@example.org")
    assert test.startswith("test.") and test.split(".", 1)[1] != real
    assert tokens.verify_token(KEY, test) is None
    assert tokens.verify_token(KEY, test, test=True) == "ada@example.org"
    assert tokens.verify_token(KEY, real, test=True) is None
    assert tokens.verify_token(KEY, "test." + real, test=True) is None  # relabelled
    assert tokens.verify_token(b"another key" * 3, test, test=True) is None


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
