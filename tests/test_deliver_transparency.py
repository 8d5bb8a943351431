"""SMTP transparency (RFC 5321 4.5.2) as the sender writes a message's data: the same bytes
as the two regular expressions it replaced, for any input (``smtp._dot_stuff``)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from newsletter.deliver.smtp import _dot_stuff


def reference(data: bytes) -> bytes:
    data = re.sub(rb"\r?\n", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", data)


pieces = st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"a", b"x y", b"=2E"]))


@given(pieces)
def test_the_same_bytes_as_the_regular_expressions(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert _dot_stuff(data) == reference(data)


@given(st.binary(max_size=200))
def test_any_bytes(data: bytes) -> None:
    assert _dot_stuff(data) == reference(data)


def test_a_message_as_composed() -> None:
    message = b"Subject: x\r\n\r\n.first\r\nsecond\r\n..third\r\n.\r\n"
    assert _dot_stuff(message) == b"Subject: x\r\n\r\n..first\r\nsecond\r\n...third\r\n..\r\n"
    assert _dot_stuff(b".") == b"..\r\n"
    assert _dot_stuff(b"a\n.b") == b"a\r\n..b\r\n"
