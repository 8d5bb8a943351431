"""VERP and unsubscribe addresses: they round-trip, and nothing forged or altered passes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.inbound import (
    Verp,
    parse_unsubscribe,
    parse_verp,
    unsubscribe_address,
    verp_address,
)

KEY = b"a signing key of the operator's"
SAFE_LOCAL = re.compile(r"[a-z]+\+[a-z2-7]+")


@pytest.mark.parametrize(
    ("run_id", "subscriber"),
    [(0, 0), (1, 1), (12345, 987654), (2**40, "s-7f3a9c"), (7, "é-unicode")],
)
def test_verp_round_trip(run_id: int, subscriber: int | str) -> None:
    address = verp_address("bounces@example.org", run_id, subscriber, KEY)
    local, domain = address.split("@")
    assert domain == "example.org" and SAFE_LOCAL.fullmatch(local), address
    assert parse_verp(address, KEY) == Verp(run_id, subscriber)


def test_unsubscribe_round_trip() -> None:
    address = unsubscribe_address("unsubscribe@example.org", 42, KEY)
    assert SAFE_LOCAL.fullmatch(address.split("@")[0])
    assert parse_unsubscribe(address, KEY) == 42
    assert parse_unsubscribe(f"<{address}>", KEY) == 42  # as an envelope shows it


def test_case_folded_by_a_mail_system_still_reads() -> None:
    address = verp_address("bounces@example.org", 3, 99, KEY)
    assert parse_verp(address.upper(), KEY) == Verp(3, 99)
    assert parse_unsubscribe(unsubscribe_address("u@example.org", 5, KEY).upper(), KEY) == 5


def test_an_address_is_refused_as_a_subscriber_key() -> None:
    # base32 is no secret: the key must be an opaque id, or every bounce shows the address.
    with pytest.raises(ValueError, match="opaque"):
        unsubscribe_address("unsubscribe@example.org", "ada@example.com", KEY)


def test_a_forged_token_reads_as_nothing() -> None:
    forged = verp_address("bounces@example.org", 1, 2, b"somebody else's key")
    assert parse_verp(forged, KEY) is None
    assert parse_unsubscribe(unsubscribe_address("u@example.org", 2, b"other"), KEY) is None


def test_every_altered_character_reads_as_nothing() -> None:
    address = verp_address("bounces@example.org", 12, 345, KEY)
    local, domain = address.split("@")
    base, token = local.split("+")
    for i, c in enumerate(token):
        for other in "abcdefghijklmnopqrstuvwxyz234567":
            if other != c:
                altered = f"{base}+{token[:i]}{other}{token[i + 1 :]}@{domain}"
                assert parse_verp(altered, KEY) is None, altered


@pytest.mark.parametrize("cut", [1, 2, 5, 16])
def test_truncated_or_extended_tokens_read_as_nothing(cut: int) -> None:
    address = verp_address("bounces@example.org", 12, 345, KEY)
    local, domain = address.split("@")
    assert parse_verp(f"{local[:-cut]}@{domain}", KEY) is None
    assert parse_verp(f"{local}{'a' * cut}@{domain}", KEY) is None


def test_a_token_serves_one_purpose() -> None:
    verp = verp_address("bounces@example.org", 1, 7, KEY)
    unsubscribe = unsubscribe_address("bounces@example.org", 7, KEY)
    assert parse_unsubscribe(verp, KEY) is None
    assert parse_verp(unsubscribe, KEY) is None


@pytest.mark.parametrize(
    "address",
    [
        "",
        "bounces@example.org",
        "bounces+@example.org",
        "bounces+!!!@x",
        "+@",
        "no-at-sign",
        "a+" + "b" * 500,
    ],
)
def test_malformed_addresses_read_as_nothing(address: str) -> None:
    assert parse_verp(address, KEY) is None
    assert parse_unsubscribe(address, KEY) is None


def test_the_local_part_stays_within_64_octets() -> None:
    assert len(verp_address("bounces@example.org", 2**62, 2**62, KEY).split("@")[0]) <= 64
    with pytest.raises(ValueError, match="64"):
        unsubscribe_address("unsubscribe@example.org", "k" * 40, KEY)


@pytest.mark.parametrize(
    ("base", "run_id", "subscriber"),
    [
        ("no-domain", 1, 1),
        ("a b@example.org", 1, 1),
        ("b@example.org", -1, 1),
        ("b@example.org", 1, -1),
        ("b@example.org", 1, ""),
    ],
)
def test_bad_arguments_are_refused(base: str, run_id: int, subscriber: int | str) -> None:
    with pytest.raises(ValueError):
        verp_address(base, run_id, subscriber, KEY)


@given(
    st.integers(0, 2**63),
    st.one_of(st.integers(0, 2**63), st.text("abcdef0123456789-_", min_size=1, max_size=12)),
)
def test_any_ids_round_trip(run_id: int, subscriber: int | str) -> None:
    address = verp_address("bounces@example.org", run_id, subscriber, KEY)
    assert len(address.split("@")[0].encode()) <= 64
    assert parse_verp(address, KEY) == Verp(run_id, subscriber)


@given(st.text(max_size=120))
def test_any_text_reads_without_raising(address: str) -> None:
    assert parse_verp(address, KEY) is None
    assert parse_unsubscribe(address, KEY) is None
