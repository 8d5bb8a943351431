from __future__ import annotations

import datetime as dt
import json

import pytest

from newsletter.errors import ParseError
from newsletter.sources import huggingface
from tests.conftest import fixture_path

API_FILES = {
    "hf_api_daily_papers_date_2024-05-27_13papers_reserialized.json": 13,
    "hf_api_daily_papers_date_2024-11-11_8papers_reserialized.json": 8,
    "hf_api_daily_papers_date_2025-10-15_26papers_reserialized.json": 26,
    "hf_api_daily_papers_date_2026-05-08_37papers.json": 37,
    "hf_api_daily_papers_date_2026-07-31_5papers_trimmed_pretty.json": 5,
    "hf_api_daily_papers_latest_2026-06-12_30papers.json": 30,
    "hf_api_daily_papers_limit25_nodate_2026-07-13_25papers_spans2days.json": 25,
    "hf_api_daily_papers_limit50_nodate_2026-07-31_30papers_captured_2026-08-02.json": 30,
}


@pytest.mark.parametrize(("name", "count"), sorted(API_FILES.items()))
def test_every_api_schema_variant_parses(name: str, count: int) -> None:
    papers = huggingface.parse(fixture_path(name).read_bytes(), f"file:{name}")
    assert len(papers) == count
    for p in papers:
        assert p.id and "\n" not in p.title and "  " not in p.title
        assert p.abstract and "\n" not in p.abstract
        assert p.authors and p.upvotes >= 0


def test_oldest_schema_unwraps_titles_and_uses_the_item_date() -> None:
    name = "hf_api_daily_papers_date_2024-05-27_13papers_reserialized.json"
    papers = {p.id: p for p in huggingface.parse(fixture_path(name).read_bytes(), name)}
    p = papers["2405.15738"]
    assert (
        p.title == "ConvLLaVA: Hierarchical Backbones as Visual Encoder for Large Multimodal Models"
    )
    assert p.upvotes == 32
    assert p.day == dt.date(2024, 5, 27)
    assert p.authors[0] == "Chunjiang Ge"
    assert p.ai_summary is None and p.ai_keywords == ()


def test_newest_schema_fields() -> None:
    name = "hf_api_daily_papers_date_2026-05-08_37papers.json"
    papers = {p.id: p for p in huggingface.parse(fixture_path(name).read_bytes(), name)}
    p = papers["2605.05242"]
    assert p.upvotes == 86 and p.comments == 3
    assert p.day == dt.date(2026, 5, 8)
    assert p.organization == "TIGER-Lab"
    assert p.github_repo == "https://github.com/DCI-Agent/DCI-Agent-Lite"
    assert p.github_stars == 101
    assert (
        p.thumbnail
        == "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2605.05242.png"
    )
    assert p.ai_summary and p.ai_summary.startswith("Direct corpus interaction")
    assert "agentic search" in p.ai_keywords
    assert p.submitted_at == dt.datetime(2026, 5, 8, 10, 1, 31, 399000, tzinfo=dt.UTC)


def test_requested_day_wins_over_timestamps() -> None:
    name = "hf_api_daily_papers_date_2025-10-15_26papers_reserialized.json"
    papers = huggingface.parse(fixture_path(name).read_bytes(), name, day=dt.date(2025, 10, 15))
    assert {p.day for p in papers} == {dt.date(2025, 10, 15)}


def test_spanning_capture_keeps_each_papers_own_day() -> None:
    name = "hf_api_daily_papers_limit25_nodate_2026-07-13_25papers_spans2days.json"
    days = [p.day for p in huggingface.parse(fixture_path(name).read_bytes(), name)]
    assert days.count(dt.date(2026, 7, 13)) == 14
    assert days.count(dt.date(2026, 7, 10)) == 11


def test_empty_list_is_no_papers() -> None:
    assert huggingface.parse(b"[]", "https://hf.test/api/daily_papers?date=2024-06-01") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>Service unavailable</html>", "not JSON"),
        (b'{"error": "Invalid date"}', "expected a JSON list of papers, got dict"),
        (b'[{"title": "x"}]', "item 0: no 'paper' object"),
        (b'[{"paper": {"id": 5, "title": "x"}}]', "item 0: 'id' should be a string, got int"),
        (
            b'[{"paper": {"id": "2406.00001", "title": "x", "upvotes": "many"}}]',
            "'upvotes' should be an integer",
        ),
        (b"", "not JSON"),
    ],
)
def test_unexpected_bodies_are_parse_errors_naming_the_url(body: bytes, message: str) -> None:
    url = "https://hf.test/api/daily_papers?date=2024-06-01"
    with pytest.raises(ParseError) as e:
        huggingface.parse(body, url, day=dt.date(2024, 6, 1))
    assert e.value.url == url
    assert message in str(e.value)
    assert str(e.value).startswith(url)


def test_saved_page_parses_through_its_hydration_json() -> None:
    name = "hf_html_daily_2024-08-01_13papers.html"
    papers = huggingface.parse_any(fixture_path(name).read_bytes(), name)
    assert len(papers) == 13
    assert {p.day for p in papers} == {dt.date(2024, 8, 1)}
    assert max(p.upvotes for p in papers) == 94


def test_parse_any_tells_json_from_html() -> None:
    item = {
        "paper": {"id": "2401.00001v2", "title": "T", "upvotes": 1},
        "publishedAt": "2024-01-02T03:00:00Z",
    }
    (paper,) = huggingface.parse_any(json.dumps([item]).encode(), "x.json")
    assert paper.id == "2401.00001" and paper.day == dt.date(2024, 1, 2)
    with pytest.raises(ParseError, match="DailyPapers"):
        huggingface.parse_any(b"<html><body>maintenance</body></html>", "x.html")


def test_a_blank_item_title_falls_back_to_the_papers_title() -> None:
    item = {
        "title": " ",
        "paper": {"id": "2411.05288", "title": "Balancing\n  Pipelines", "upvotes": 1},
    }
    (paper,) = huggingface.parse(json.dumps([item]).encode(), "x", day=dt.date(2024, 11, 11))
    assert paper.title == "Balancing Pipelines"
    with pytest.raises(ParseError, match="has no title"):
        huggingface.parse(
            b'[{"title": " ", "paper": {"id": "2401.00001", "title": "\\n"}}]',
            "x",
            day=dt.date(2024, 1, 1),
        )
