"""arXiv: parser details, announcement days, and the source over a real HTTP server."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.errors import ParseError
from newsletter.sources import ArxivSource, arxiv
from newsletter.sources.http import HttpClient
from tests.conftest import fixture_path
from tests.httpserver import FixtureServer, Reply, Request

RSS_CL = "arxiv_rss_new_cs.cl_2026-04-27_3items_trimmed.rss.xml"
RSS_LG = "arxiv_rss_new_cs.lg_2026-04-27_3items_trimmed.rss.xml"
RSS_WEEKEND = "arxiv_rss_new_cs.CL_2026-08-01_saturday_empty_0items.rss.xml"
API_CL_LG = "arxiv_api_query_cat_cs.LG_OR_cs.AI_2026-04-30_20entries.atom.xml"
OLD = "arxiv_api_query_id_list_1111.2011v2_2016-10-09_old_format.atom.xml"


def text(name: str) -> str:
    return fixture_path(name).read_text("utf-8")


# --- parser ----------------------------------------------------------------------------------


def test_old_format_entry() -> None:
    [paper] = arxiv.parse(text(OLD), "u")
    assert paper.id == "1111.2011"
    assert paper.title.endswith("on a Bethe Lattice in the Large Connectivity Limit")
    assert paper.abstract.startswith(
        "Theoretical description of anisotropic systems, such as layered"
    )
    assert "\n" not in paper.abstract and "  " not in paper.abstract
    assert paper.published_at == dt.datetime(2011, 11, 8, 18, 48, 36, tzinfo=dt.UTC)
    assert paper.source == "arxiv" and paper.upvotes == 0


def test_old_style_ids_keep_their_archive() -> None:
    papers = arxiv.parse(text("arxiv_api_query_au_del_maestro_2016-10-09_old_format.atom.xml"), "u")
    assert {"cond-mat/0702661", "cond-mat/0412498"} <= {p.id for p in papers}


def test_entities_in_abstracts_are_decoded() -> None:
    papers = arxiv.parse(
        text("arxiv_api_query_transformer_cs.LG_2026-06-14_5entries.atom.xml"), "u"
    )
    assert any("<" in p.abstract for p in papers)
    assert not any("&lt;" in p.abstract for p in papers)


def test_error_feed_is_a_parse_error_with_arxivs_message() -> None:
    golden = json.loads(text("arxiv_api_golden_error_id_abc_http400_2026-04-12.wrapper.json"))
    with pytest.raises(ParseError) as info:
        arxiv.parse(golden["body"], golden["url"])
    assert str(info.value) == (
        f"{golden['url']}: cannot parse: arXiv API error: incorrect id format for abc"
    )


def test_rss_authors_with_a_mononym() -> None:
    papers = {p.id: p for p in arxiv.parse(text(RSS_CL), "u")}
    assert papers["2604.22002"].authors == (
        "Anamta Khan",
        "Ratna Kandala",
        "Deepti",
        "Sheza Munir",
        "Joyojeet Pal",
    )
    assert papers["2604.22002"].abstract.startswith("Social media platforms have become")


def _mixed_feed() -> str:
    """The real cs.CL feed with its three items made one new, one cross, one replace."""
    body = text(RSS_CL)
    kinds = iter(["new", "cross", "replace-cross"])
    body = re.sub(
        r"<arxiv:announce_type>new</arxiv:announce_type>",
        lambda m: f"<arxiv:announce_type>{next(kinds)}</arxiv:announce_type>",
        body,
    )
    return body


@pytest.mark.parametrize(
    ("keep", "ids"),
    [
        (("new",), ["2604.22002"]),
        (("new", "cross"), ["2604.22002", "2604.22027"]),
        (("replace",), ["2604.22038"]),
        (("new", "cross", "replace"), ["2604.22002", "2604.22027", "2604.22038"]),
    ],
)
def test_rss_announce_types(keep: tuple[str, ...], ids: list[str]) -> None:
    assert [p.id for p in arxiv.parse(_mixed_feed(), "u", announce_types=keep)] == ids


def test_empty_weekend_feed_is_no_papers() -> None:
    day, papers = arxiv.parse_feed(text(RSS_WEEKEND), "u")
    assert papers == []
    assert day == dt.date(2026, 8, 1)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("<html><body>503 Service Unavailable</body></html>", "expected an Atom <feed>"),
        ("not xml at all", "not XML"),
        ("<rss version='2.0'></rss>", "no <channel>"),
    ],
)
def test_unrecognised_bodies(body: str, expected: str) -> None:
    with pytest.raises(ParseError, match=expected):
        arxiv.parse(body, "https://rss.arxiv.org/rss/cs.CL")


# --- announcement days -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("submitted", "listed"),
    [
        ("2026-04-29T17:59:01+00:00", "2026-04-30"),  # Wed 13:59 EDT: Thursday's listing
        ("2026-04-29T18:00:00+00:00", "2026-05-01"),  # Wed 14:00 EDT: Friday's
        ("2026-05-01T17:00:00+00:00", "2026-05-04"),  # Fri before the cutoff: Monday's
        ("2026-05-01T19:00:00+00:00", "2026-05-05"),  # Fri after it: Tuesday's
        ("2026-05-03T12:00:00+00:00", "2026-05-05"),  # Sunday: Tuesday's
        ("2012-01-23T21:15:02+00:00", "2012-01-25"),  # Mon 16:15 EST (winter offset)
    ],
)
def test_announcement_day(submitted: str, listed: str) -> None:
    assert arxiv.announcement_day(dt.datetime.fromisoformat(submitted)) == dt.date.fromisoformat(
        listed
    )


@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1)))
def test_submission_window_contains_what_announcement_day_assigns(naive: dt.datetime) -> None:
    when = naive.replace(tzinfo=dt.UTC)
    day = arxiv.announcement_day(when)
    assert day.weekday() < 5
    start, end = arxiv.submission_window(day)
    assert start <= when < end


# --- the source ------------------------------------------------------------------------------


def atom_pages(name: str) -> Any:
    """The API: serves the entries of a real feed, honouring start and max_results."""
    head, *entries = text(name).split("<entry>")
    entries = ["<entry>" + e.replace("</feed>", "") for e in entries]

    def handler(req: Request) -> Reply:
        start, size = int(req.query["start"]), int(req.query["max_results"])
        chunk = "".join(entries[start : start + size])
        return Reply(200, (head + chunk + "</feed>").encode())

    return handler


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    with FixtureServer() as srv:
        srv.routes["/rss/cs.CL"] = lambda req: Reply(200, fixture_path(RSS_CL).read_bytes())
        srv.routes["/rss/cs.LG"] = lambda req: Reply(200, fixture_path(RSS_LG).read_bytes())
        srv.routes["/api/query"] = atom_pages(API_CL_LG)
        yield srv


def source(server: FixtureServer, sleeps: list[float], **kwargs: Any) -> ArxivSource:
    return ArxivSource(
        HttpClient(retries=0),
        ["cs.CL", "cs.LG"],
        api_url=f"{server.url}/api/query",
        rss_url=f"{server.url}/rss",
        sleep=sleeps.append,
        **kwargs,
    )


def test_current_listing_comes_from_rss_with_the_delay_between_requests(
    server: FixtureServer,
) -> None:
    sleeps: list[float] = []
    papers = source(server, sleeps, delay_seconds=3).fetch_day(dt.date(2026, 4, 27))
    assert len(papers) == 6
    assert {p.day for p in papers} == {dt.date(2026, 4, 27)}
    assert [r.path for r in server.requests] == ["/rss/cs.CL", "/rss/cs.LG"]
    assert sleeps == [3]  # between the two requests, none before the first


def test_an_earlier_day_asks_the_api_for_its_submission_window(server: FixtureServer) -> None:
    sleeps: list[float] = []
    src = source(server, sleeps, delay_seconds=0)
    src.PAGE_SIZE = 8  # type: ignore[misc]
    papers = src.fetch_day(dt.date(2026, 4, 30))
    api = [r for r in server.requests if r.path == "/api/query"]
    assert api[0].query["search_query"] == (
        "(cat:cs.CL OR cat:cs.LG) AND submittedDate:[202604281800 TO 202604291759]"
    )
    assert [r.query["start"] for r in api] == ["0", "8", "16"]
    assert sleeps == []  # delay_seconds 0: tests never wait
    assert len(papers) == 20  # new and cross-lists, the defaults
    assert {p.day for p in papers} == {dt.date(2026, 4, 30)}
    assert all(p.categories for p in papers)


def test_announce_types_on_the_api_path(server: FixtureServer) -> None:
    body = text(API_CL_LG)
    primaries = re.findall(r'<arxiv:primary_category term="([^"]+)"', body)
    src = source(server, [], delay_seconds=0, announce_types=("new",))
    papers = src.fetch_day(dt.date(2026, 4, 30))
    assert len(papers) == sum(p in ("cs.CL", "cs.LG") for p in primaries)
    assert all(p.categories[0] in ("cs.CL", "cs.LG") for p in papers)


def test_weekend_day_needs_no_api_call(server: FixtureServer) -> None:
    assert source(server, [], delay_seconds=0).fetch_day(dt.date(2026, 5, 2)) == []
    assert all(r.path.startswith("/rss/") for r in server.requests)


def test_error_feed_served_with_400_is_an_error(server: FixtureServer) -> None:
    golden = json.loads(text("arxiv_api_golden_error_id_abc_http400_2026-04-12.wrapper.json"))
    server.routes["/api/query"] = lambda req: Reply(400, golden["body"].encode())
    with pytest.raises(ParseError, match="arXiv API error: incorrect id format"):
        source(server, [], delay_seconds=0).fetch_day(dt.date(2026, 4, 30))


def test_weekend_feed_and_latest_day(server: FixtureServer) -> None:
    server.routes["/rss/cs.CL"] = lambda req: Reply(200, fixture_path(RSS_WEEKEND).read_bytes())
    server.routes["/rss/cs.LG"] = server.routes["/rss/cs.CL"]
    src = source(server, [], delay_seconds=0)
    assert src.fetch_day(dt.date(2026, 8, 1)) == []  # the Saturday feed: empty, normal
    assert src.latest_day(dt.date(2026, 8, 1)) == dt.date(2026, 7, 31)


def test_rss_down_falls_back_to_the_api(server: FixtureServer) -> None:
    server.routes["/rss/cs.CL"] = lambda req: Reply(503, b"")
    papers = source(server, [], delay_seconds=0).fetch_day(dt.date(2026, 4, 30))
    assert len(papers) == 20
    assert server.requests[-1].path == "/api/query"
