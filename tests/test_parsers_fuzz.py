"""Every parser, fed arbitrary bytes or a mutated real capture, parses or raises ParseError.

Nothing else may escape: no KeyError, no TypeError, no recursion error, no silent crash.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from newsletter.errors import ParseError
from newsletter.models import PaperData
from newsletter.sources import arxiv, huggingface
from tests.conftest import FIXTURES

URL = "https://example.org/fuzz"

PARSERS: dict[str, Callable[[bytes], object]] = {
    "hf.parse": lambda b: huggingface.parse(b, URL),
    "hf.parse_dated": lambda b: huggingface.parse(b, URL, day=None),
    "hf.parse_page": lambda b: huggingface.parse_page(b, URL + "/papers/date/2024-08-01"),
    "hf.parse_page_undated": lambda b: huggingface.parse_page(b, URL),
    "hf.parse_any": lambda b: huggingface.parse_any(b, URL),
    "arxiv.parse": lambda b: arxiv.parse(b, URL),
    "arxiv.parse_new_only": lambda b: arxiv.parse(b, URL, announce_types=("new",)),
    "arxiv.parse_feed": lambda b: arxiv.parse_feed(b, URL),
}

SMALL = sorted(
    p.name for p in FIXTURES.iterdir() if p.name != "SOURCES.md" and p.stat().st_size < 70_000
)
ALL = sorted(p.name for p in FIXTURES.iterdir() if p.name != "SOURCES.md")
JSON_FILES = [n for n in ALL if n.startswith("hf_api")]
_BYTES = {name: (FIXTURES / name).read_bytes() for name in ALL}


def parses_or_raises_parse_error(body: bytes) -> None:
    for name, parse in PARSERS.items():
        try:
            result = parse(body)
        except ParseError as e:
            assert e.url.startswith(URL), name
            # Recognised, not stumbled upon: a type slip in the parser would surface here as
            # a TypeError/KeyError/AttributeError wrapped by the parser's last-resort guard.
            assert not isinstance(
                e.__cause__, TypeError | KeyError | AttributeError | IndexError
            ), f"{name}: {e}"
            continue
        papers = result[1] if isinstance(result, tuple) else result
        assert isinstance(papers, list), name
        assert all(isinstance(p, PaperData) and p.id and p.title for p in papers), name


prefixes = st.sampled_from(
    [
        b"",
        b"[",
        b"{",
        b"<?xml version='1.0'?>",
        b'<feed xmlns="http://www.w3.org/2005/Atom">',
        b"<rss><channel>",
        b'<div data-target="DailyPapers" data-props="',
        b'<article><h3><a href="/papers/',
    ]
)


@given(prefixes, st.binary(max_size=400))
def test_arbitrary_bytes(prefix: bytes, tail: bytes) -> None:
    parses_or_raises_parse_error(prefix + tail)


@st.composite
def mutated(draw: st.DrawFn, names: list[str]) -> bytes:
    body = bytearray(_BYTES[draw(st.sampled_from(names))])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body)))
        kind = draw(st.sampled_from(["cut", "insert", "flip", "truncate"]))
        if kind == "cut":
            del body[at : at + draw(st.integers(1, 200))]
        elif kind == "insert":
            body[at:at] = draw(
                st.sampled_from([b"<", b">", b'"', b"&", b"&quot;", b"\x00", b"\xff", b"]]>", b"}"])
            ) * draw(st.integers(1, 3))
        elif kind == "flip" and at < len(body):
            body[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del body[at:]
    return bytes(body)


@given(mutated(SMALL))
def test_mutated_small_fixtures(body: bytes) -> None:
    parses_or_raises_parse_error(body)


@given(mutated(["hf_html_daily_2024-08-01_13papers.html"]))
def test_mutated_real_page(body: bytes) -> None:
    parses_or_raises_parse_error(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def retyped_json(draw: st.DrawFn) -> bytes:
    """A real API response with one value somewhere replaced by a value of any type."""
    data: Any = json.loads(_BYTES[draw(st.sampled_from(JSON_FILES))])
    node: Any = data
    path_len = draw(st.integers(0, 4))
    for _ in range(path_len):
        if isinstance(node, list) and node:
            key: Any = draw(st.integers(0, len(node) - 1))
        elif isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
        else:
            break
        if not isinstance(node[key], list | dict):
            break
        node = node[key]
    if isinstance(node, list) and node:
        node[draw(st.integers(0, len(node) - 1))] = draw(json_values)
    elif isinstance(node, dict) and node:
        node[draw(st.sampled_from(sorted(node)))] = draw(json_values)
    else:
        data = draw(json_values)
    return json.dumps(data).encode()


@given(retyped_json())
def test_json_with_any_value_of_any_type(body: bytes) -> None:
    parses_or_raises_parse_error(body)
