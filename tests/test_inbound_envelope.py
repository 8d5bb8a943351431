"""With ``smtp.bounce_address`` every message says whom it was for, in its envelope: a VERP
envelope sender naming the run and the subscriber, a tokenized unsubscribe ``mailto:``; both
read back by ``inbound.tokens``. Without it, the bytes are what they were."""

from __future__ import annotations

import dataclasses
import re

import pytest

from newsletter import compose
from newsletter.compose.mime import unfolded_headers
from newsletter.inbound import parse_unsubscribe, parse_verp
from tests.digests import MASTHEAD, load_digest, spec

KEY = b"k" * 32
BOUNCES = dataclasses.replace(MASTHEAD, bounce_address="bounces@example.org")


def digest_for(subscriber_id: str):  # type: ignore[no-untyped-def]
    digest = load_digest()
    return dataclasses.replace(
        digest, subscriber=dataclasses.replace(digest.subscriber, id=subscriber_id)
    )


def mailto(data: bytes) -> str:
    value = dict(unfolded_headers(data))["List-Unsubscribe"]
    found = re.search(r"<mailto:([^?>]+)\?subject=unsubscribe>", value)
    assert found is not None, value
    return found[1]


@pytest.mark.parametrize("reference", [False, True])
def test_the_envelope_names_the_run_and_the_subscriber(reference: bool) -> None:
    composer = compose.Composer(spec(masthead=BOUNCES, run_id=4242), reference=reference)
    out = composer.compose(digest_for("AbC-12_xyZ09"))
    local, _, domain = out.envelope_from.rpartition("@")
    assert domain == "example.org" and re.fullmatch(r"bounces\+[a-z2-7]+", local), local
    assert len(local) <= 64
    verp = parse_verp(out.envelope_from, KEY)
    assert verp is not None and (verp.run_id, verp.subscriber) == (4242, "AbC-12_xyZ09")
    address = mailto(out.data)
    assert re.fullmatch(r"unsubscribe\+[a-z2-7]+@example\.org", address), address
    assert parse_unsubscribe(address, KEY) == "AbC-12_xyZ09"
    assert parse_verp(address, KEY) is None  # one purpose each
    assert b"reader@" not in out.envelope_from.encode()  # the address is in no token


def test_fast_and_reference_write_the_same_headers_with_tokens() -> None:
    digest = digest_for("s1")
    fast = compose.Composer(spec(masthead=BOUNCES, run_id=1)).compose(digest)
    slow = compose.Composer(spec(masthead=BOUNCES, run_id=1), reference=True).compose(digest)
    assert fast.envelope_from == slow.envelope_from
    wanted = ("List-Unsubscribe", "From", "To", "Message-ID")
    assert [h for h in unfolded_headers(fast.data) if h[0] in wanted] == [
        h for h in unfolded_headers(slow.data) if h[0] in wanted
    ]


def test_without_a_bounce_address_nothing_changes() -> None:
    digest = digest_for("s1")
    out = compose.Composer(spec(run_id=9)).compose(digest)
    plain = compose.Composer(spec()).compose(digest)  # no run: a preview
    assert out.envelope_from == "papers@example.org"
    assert mailto(out.data) == "papers@example.org"
    assert out.data == plain.data


def test_a_test_copy_carries_no_token_that_could_unsubscribe() -> None:
    out = compose.Composer(spec(masthead=BOUNCES, test_links=True)).compose(digest_for("s1"))
    assert out.envelope_from == "bounces@example.org"
    assert "unsubscribe+" not in dict(unfolded_headers(out.data))["List-Unsubscribe"]
