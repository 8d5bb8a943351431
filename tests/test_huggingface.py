"""Hugging Face: the page parser (JSON and DOM paths), the API paging, modes and fallback."""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Iterator
from typing import Any

import pytest
from bs4 import BeautifulSoup, Tag

from newsletter.errors import FetchError, ParseError
from newsletter.models import PaperData
from newsletter.sources import HuggingFace, Period, huggingface
from newsletter.sources.http import HttpClient
from tests.conftest import HF_API_BY_DATE, fixture_path
from tests.httpserver import FixtureServer, Reply, Request, in_turn

PAGE_2024 = "hf_html_daily_2024-08-01_13papers.html"
PAGE_URL = "https://huggingface.co/papers/date/2024-08-01"
FIELDS = (
    "id",
    "title",
    "abstract",
    "authors",
    "upvotes",
    "comments",
    "day",
    "published_at",
    "submitted_at",
)


def _soup() -> BeautifulSoup:
    return BeautifulSoup(fixture_path(PAGE_2024).read_bytes(), "lxml")


def _hydrater(soup: BeautifulSoup) -> Tag:
    node = soup.find(None, {"data-target": "DailyPapers"})
    assert isinstance(node, Tag)
    return node


def wrap_in_page(items: Any, date: str | None) -> str:
    """A papers page as the site serves it: the JSON entity-escaped in data-props."""
    props: dict[str, Any] = {"dailyPapers": items, "canSubmit": False}
    if date:
        props["date"] = f"{date}T00:00:00.000Z"
    escaped = html.escape(json.dumps(props), quote=True)
    return (
        "<!doctype html><html><body><main>"
        f'<div class="SVELTE_HYDRATER contents" data-target="DailyPapers" data-props="{escaped}">'
        "</div></main></body></html>"
    )


def _view(p: PaperData) -> tuple[Any, ...]:
    return tuple(getattr(p, f) for f in FIELDS)


# --- the page ------------------------------------------------------------------------------


def test_json_and_dom_paths_agree_on_the_real_page() -> None:
    body = fixture_path(PAGE_2024).read_bytes()
    from_json = huggingface.parse_page(body, PAGE_URL)
    soup = _soup()
    _hydrater(soup).unwrap()  # the hydration element gone, its server-rendered cards kept
    from_dom = huggingface.parse_page(str(soup), PAGE_URL)
    assert len(from_json) == len(from_dom) == 13
    assert [(p.id, p.title, p.upvotes, p.comments) for p in from_dom] == [
        (p.id, p.title, p.upvotes, p.comments) for p in from_json
    ]
    assert from_dom[0].upvotes == 94 and from_dom[0].comments == 5
    assert {p.day for p in from_dom} == {dt.date(2024, 8, 1)}


def test_dom_fallback_when_data_props_is_missing_or_broken() -> None:
    soup = _soup()
    del _hydrater(soup)["data-props"]
    assert len(huggingface.parse_page(str(soup), PAGE_URL)) == 13
    _hydrater(soup)["data-props"] = "{not json"
    assert len(huggingface.parse_page(str(soup), PAGE_URL)) == 13


def test_page_without_json_or_cards_is_a_parse_error_naming_url_and_what() -> None:
    soup = _soup()
    _hydrater(soup).decompose()  # the element and the cards inside it
    with pytest.raises(ParseError) as info:
        huggingface.parse_page(str(soup), PAGE_URL)
    message = str(info.value)
    assert message.startswith(PAGE_URL + ": cannot parse:")
    assert 'data-target="DailyPapers"' in message and "paper cards" in message


def test_maintenance_page_is_a_parse_error() -> None:
    body = b"<html><body><h1>We'll be back soon</h1></body></html>"
    with pytest.raises(ParseError, match="DailyPapers"):
        huggingface.parse_page(body, PAGE_URL)


def test_cards_without_a_known_day_are_an_error() -> None:
    soup = _soup()
    _hydrater(soup).unwrap()
    with pytest.raises(ParseError, match="no date"):
        huggingface.parse_page(str(soup), "https://huggingface.co/papers/trending")


def test_old_query_url_names_the_day() -> None:
    soup = _soup()
    _hydrater(soup).unwrap()
    papers = huggingface.parse_page(str(soup), "https://huggingface.co/papers?date=2024-08-01")
    assert {p.day for p in papers} == {dt.date(2024, 8, 1)}


@pytest.mark.parametrize("date", sorted(HF_API_BY_DATE))
def test_page_wrapping_an_api_response_matches_the_api_path(date: str) -> None:
    body = fixture_path(HF_API_BY_DATE[date]).read_bytes()
    api = huggingface.parse(body, f"https://huggingface.co/api/daily_papers?date={date}")
    page_body = wrap_in_page(json.loads(body), date)
    page = huggingface.parse_page(page_body, f"https://huggingface.co/papers/date/{date}")
    assert [_view(p) for p in page] == [_view(p) for p in api]
    assert page == api


def test_weekly_page_items_keep_their_own_days() -> None:
    name = "hf_api_daily_papers_limit25_nodate_2026-07-13_25papers_spans2days.json"
    items = json.loads(fixture_path(name).read_bytes())
    papers = huggingface.parse_page(
        wrap_in_page(items, "2026-07-06"), "https://huggingface.co/papers/week/2026-W28"
    )
    assert sorted({p.day.isoformat() for p in papers}) == ["2026-07-10", "2026-07-13"]


def test_empty_list_is_no_papers_not_an_error() -> None:
    assert huggingface.parse_page(wrap_in_page([], "2026-08-01"), PAGE_URL) == []
    assert huggingface.parse(b"[]", "https://huggingface.co/api/daily_papers") == []


def test_single_paper_page_with_reordered_single_quoted_attributes() -> None:
    name = "hf_html_paper_page_2509.24002_2025-10-02_bs4_prettified.html"
    [paper] = huggingface.parse_page(
        fixture_path(name).read_bytes(), "https://hf.co/papers/2509.24002"
    )
    assert paper.id == "2509.24002"
    assert paper.upvotes == 118
    assert paper.day == dt.date(2025, 10, 1)
    assert paper.github_repo == "https://github.com/eval-sys/mcpmark"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda items: {"papers": items}, "expected a JSON list"),
        (
            lambda items: [{**items[0], "paper": {**items[0]["paper"], "upvotes": "many"}}],
            "'upvotes' should be an integer",
        ),
        (lambda items: [{**items[0], "numComments": [1]}], "'numComments' should be an integer"),
        (
            lambda items: [{**items[0], "title": 42, "paper": {**items[0]["paper"], "title": 42}}],
            "'title' should be a string",
        ),
        (
            lambda items: [{**items[0], "paper": {**items[0]["paper"], "authors": "A. Author"}}],
            "authors is not a list",
        ),
        (lambda items: ["2405.15738"], "item 0: expected an object"),
        (lambda items: [{**items[0], "paper": None}], "no 'paper' object"),
        (lambda items: [{**items[0], "publishedAt": "yesterday"}], "bad timestamp"),
    ],
)
def test_json_with_wrong_types_is_a_parse_error(mutate: Any, expected: str) -> None:
    items = json.loads(fixture_path(HF_API_BY_DATE["2024-05-27"]).read_bytes())
    body = json.dumps(mutate(items))
    url = "https://huggingface.co/api/daily_papers"
    with pytest.raises(ParseError, match=expected) as info:
        huggingface.parse(body, url)
    assert info.value.url == url
    # The same bad data inside a page's hydration JSON; the page says which list it lacks.
    on_page = "no dailyPapers list" if expected == "expected a JSON list" else expected
    with pytest.raises(ParseError, match=on_page):
        huggingface.parse_page(wrap_in_page(mutate(items), None), PAGE_URL)


# --- the source: API paging, modes, fallback --------------------------------------------------


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    with FixtureServer() as srv:
        yield srv


def paged_api(items: list[Any]) -> Any:
    """``/api/daily_papers`` honouring ``limit`` and ``p`` (0-based) over ``items``."""

    def handler(req: Request) -> Reply:
        limit = int(req.query.get("limit", 50))
        page = int(req.query.get("p", 0))
        chunk = items[page * limit : (page + 1) * limit]
        return Reply(200, json.dumps(chunk).encode(), {"Content-Type": "application/json"})

    return handler


def test_api_follows_p_until_a_short_page_and_sorts(server: FixtureServer) -> None:
    items = json.loads(fixture_path(HF_API_BY_DATE["2026-05-08"]).read_bytes())
    server.routes["/api/daily_papers"] = paged_api(items)
    with HttpClient(retries=0) as client:
        papers = HuggingFace(server.url, client, page_size=10).fetch_day(dt.date(2026, 5, 8))
    assert len(papers) == 37
    pages = [(r.query["p"], r.query["limit"], r.query["date"]) for r in server.requests]
    assert pages == [
        ("0", "10", "2026-05-08"),
        ("1", "10", "2026-05-08"),
        ("2", "10", "2026-05-08"),
        ("3", "10", "2026-05-08"),
    ]
    upvotes = [p.upvotes for p in papers]
    assert upvotes == sorted(upvotes, reverse=True)


def test_exact_multiple_of_the_page_size_stops_on_the_empty_page(server: FixtureServer) -> None:
    items = json.loads(fixture_path(HF_API_BY_DATE["2024-11-11"]).read_bytes())
    server.routes["/api/daily_papers"] = paged_api(items)
    with HttpClient(retries=0) as client:
        papers = HuggingFace(server.url, client, page_size=4).fetch_day(dt.date(2024, 11, 11))
    assert len(papers) == 8
    assert [r.query["p"] for r in server.requests] == ["0", "1", "2"]


def test_server_ignoring_p_does_not_loop(server: FixtureServer) -> None:
    items = json.loads(fixture_path(HF_API_BY_DATE["2024-11-11"]).read_bytes())
    server.routes["/api/daily_papers"] = lambda req: Reply(200, json.dumps(items[:4]).encode())
    with HttpClient(retries=0) as client:
        papers = HuggingFace(server.url, client, page_size=4).fetch_day(dt.date(2024, 11, 11))
    assert len(papers) == 4
    assert len(server.requests) == 2


def test_unsorted_server_order_is_sorted_client_side(server: FixtureServer) -> None:
    name = "hf_api_daily_papers_latest_2026-06-12_30papers.json"
    items = json.loads(fixture_path(name).read_bytes())
    server.routes["/api/daily_papers"] = paged_api(items)
    with HttpClient(retries=0) as client:
        papers = HuggingFace(server.url, client).fetch_period(Period("trending"))
    assert server.requests[0].query["sort"] == "trending"
    assert papers[0].upvotes == 118
    assert [p.upvotes for p in papers] == sorted((p.upvotes for p in papers), reverse=True)


@pytest.mark.parametrize(
    ("period", "param", "path"),
    [
        (Period.parse("week", "2025-W40"), ("week", "2025-W40"), "/papers/week/2025-W40"),
        (Period.parse("month", "2025-10"), ("month", "2025-10"), "/papers/month/2025-10"),
        (Period.parse("date", "2024-08-01"), ("date", "2024-08-01"), "/papers/date/2024-08-01"),
        (Period("trending"), ("sort", "trending"), "/papers/trending"),
    ],
)
def test_periods_in_api_and_page_mode(
    server: FixtureServer, period: Period, param: tuple[str, str], path: str
) -> None:
    items = json.loads(fixture_path(HF_API_BY_DATE["2025-10-15"]).read_bytes())
    server.routes["/api/daily_papers"] = paged_api(items)
    server.routes[path] = lambda req: Reply(200, wrap_in_page(items, None).encode())
    with HttpClient(retries=0) as client:
        via_api = HuggingFace(server.url, client).fetch_period(period)
        via_page = HuggingFace(server.url, client, mode="page").fetch_period(period)
    assert server.requests[0].query[param[0]] == param[1]
    assert server.requests[-1].path == path
    assert len(via_api) == len(via_page) == 26
    assert [p.id for p in via_api] == [p.id for p in via_page]


def test_api_failure_falls_back_to_the_page(server: FixtureServer) -> None:
    server.routes["/api/daily_papers"] = in_turn(Reply(503, b"down"))
    server.routes["/papers/date/2024-08-01"] = lambda req: Reply(
        200, fixture_path(PAGE_2024).read_bytes()
    )
    with HttpClient(retries=0) as client:
        papers = HuggingFace(server.url, client).fetch_day(dt.date(2024, 8, 1))
    assert len(papers) == 13
    assert [r.path for r in server.requests] == ["/api/daily_papers", "/papers/date/2024-08-01"]


def test_api_returning_garbage_falls_back_too(server: FixtureServer) -> None:
    server.routes["/api/daily_papers"] = lambda req: Reply(200, b"<html>maintenance</html>")
    server.routes["/papers/date/2024-08-01"] = lambda req: Reply(
        200, fixture_path(PAGE_2024).read_bytes()
    )
    with HttpClient(retries=0) as client:
        assert len(HuggingFace(server.url, client).fetch_day(dt.date(2024, 8, 1))) == 13


def test_both_failing_is_one_fetch_error_naming_both(server: FixtureServer) -> None:
    server.routes["/api/daily_papers"] = lambda req: Reply(500, b"")
    server.routes["/papers/date/2024-08-01"] = lambda req: Reply(200, b"<html>maintenance</html>")
    with HttpClient(retries=0) as client, pytest.raises(FetchError) as info:
        HuggingFace(server.url, client).fetch_day(dt.date(2024, 8, 1))
    message = str(info.value)
    assert "/api/daily_papers?date=2024-08-01" in message and "HTTP 500" in message
    assert "page fallback failed too" in message and "/papers/date/2024-08-01" in message
    assert "\n" not in message


def test_page_mode_never_asks_the_api(server: FixtureServer) -> None:
    server.routes["/papers/date/2024-08-01"] = lambda req: Reply(
        200, fixture_path(PAGE_2024).read_bytes()
    )
    with HttpClient(retries=0) as client:
        papers = HuggingFace(server.url, client, mode="page").fetch_day(dt.date(2024, 8, 1))
    assert len(papers) == 13
    assert [r.path for r in server.requests] == ["/papers/date/2024-08-01"]


def test_period_validation() -> None:
    with pytest.raises(ValueError, match="ISO week"):
        Period.parse("week", "2025-40")
    with pytest.raises(ValueError, match="month"):
        Period.parse("month", "2025-13")
    with pytest.raises(ValueError, match="not a week of the calendar"):
        Period.parse("week", "2025-W53")  # 2025 has 52 ISO weeks
    assert Period.parse("week", "2026-W53").days()[0] == dt.date(2026, 12, 28)
    assert len(Period.parse("week", "2025-W01").days()) == 7
    assert Period.parse("week", "2025-W01").days()[0] == dt.date(2024, 12, 30)
    assert len(Period.parse("month", "2024-02").days()) == 29
    assert len(Period.parse("month", "2024-12").days()) == 31


def test_parse_any_tells_json_from_html(tmp_path: Any) -> None:
    assert len(huggingface.parse_any(fixture_path(PAGE_2024).read_bytes(), "x.html")) == 13
    assert (
        len(
            huggingface.parse_any(fixture_path(HF_API_BY_DATE["2024-11-11"]).read_bytes(), "x.json")
        )
        == 8
    )


def test_page_falls_back_to_the_old_daily_url_on_404(server: FixtureServer) -> None:
    server.routes["/papers"] = lambda req: Reply(
        200 if req.query.get("date") == "2024-08-01" else 404,
        fixture_path(PAGE_2024).read_bytes(),
    )
    with HttpClient(retries=0) as client:
        papers = HuggingFace(server.url, client, mode="page").fetch_day(dt.date(2024, 8, 1))
    assert len(papers) == 13
    assert [(r.path, r.query) for r in server.requests] == [
        ("/papers/date/2024-08-01", {}),
        ("/papers", {"date": "2024-08-01"}),
    ]
