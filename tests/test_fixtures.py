"""Every real capture in ../shared/fixtures parses to the count SOURCES.md gives for it.

Each file is served by the real HTTP server on 127.0.0.1 and fetched through the fetch
layer, the way production reads the live sites; a golden ``.wrapper.json`` is served with
its recorded status and body. Expected values are in tests/data/fixtures_expected.json.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from newsletter.errors import ParseError
from newsletter.models import PaperData
from newsletter.sources import arxiv, huggingface
from newsletter.sources.http import HttpClient
from tests.conftest import DATA, FIXTURES
from tests.httpserver import FixtureServer, Reply, Request

EXPECTED: dict[str, Any] = json.loads((DATA / "fixtures_expected.json").read_text("utf-8"))
EXPECTED.pop("_comment")
FILES = sorted(p.name for p in FIXTURES.iterdir() if p.name != "SOURCES.md")


@pytest.fixture(scope="module")
def server() -> Iterator[FixtureServer]:
    with FixtureServer() as srv:
        for name in FILES:
            srv.routes[f"/fixtures/{name}"] = _serve(name)
        yield srv


def _serve(name: str) -> Any:
    def handler(req: Request) -> Reply:
        body = (FIXTURES / name).read_bytes()
        if name.endswith(".wrapper.json"):
            golden = json.loads(body)
            return Reply(golden["status_code"], golden["body"].encode("utf-8"))
        return Reply(200, body)

    return handler


def _fetch_and_parse(server: FixtureServer, name: str) -> list[PaperData]:
    parser = EXPECTED[name]["parser"]
    with HttpClient(retries=0) as client:
        response = client.get(f"{server.url}/fixtures/{name}", accept=(400,))
    if parser == "hf_api":
        return huggingface.parse(response.body, response.url)
    if parser == "hf_page":
        return huggingface.parse_page(response.body, response.url)
    return arxiv.parse(response.body, response.url)


def test_every_fixture_has_expectations() -> None:
    assert sorted(EXPECTED) == FILES


@pytest.mark.parametrize("name", FILES)
def test_fixture_parses_to_the_documented_count(server: FixtureServer, name: str) -> None:
    expected = EXPECTED[name]
    if "error" in expected:
        with pytest.raises(ParseError) as info:
            _fetch_and_parse(server, name)
        assert expected["error"] in str(info.value)
        assert f"/fixtures/{name}" in str(info.value)  # the error names the URL
        return
    papers = _fetch_and_parse(server, name)
    assert len(papers) == expected["count"]
    # The count SOURCES.md puts in the file name, where it does (13papers, 10entries, 0items).
    m = re.search(r"_(\d+)(?:papers|entries|items)", name)
    if m:
        assert len(papers) == int(m.group(1))
    assert len({p.id for p in papers}) == len(papers)
    by_id = {p.id: p for p in papers}
    for pid, fields in expected["papers"].items():
        assert pid in by_id, f"{pid} missing from {name}"
        _check(by_id[pid], fields)


def _check(paper: PaperData, fields: dict[str, Any]) -> None:
    for key, value in fields.items():
        if key == "authors":
            assert len(paper.authors) == value
        elif key == "first_author":
            assert paper.authors[0] == value
        elif key == "day":
            assert paper.day == dt.date.fromisoformat(value)
        elif key == "categories":
            assert list(paper.categories) == value
        else:
            assert getattr(paper, key) == value, key


def test_sources_md_names_every_file() -> None:
    text = (FIXTURES / "SOURCES.md").read_text("utf-8")
    for name in FILES:
        assert f"`{name}`" in text
