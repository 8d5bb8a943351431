"""What a source sends is cleaned at the edge, and a bad item costs only itself.

Each parser (Hugging Face API, page and cards, arXiv Atom and RSS) reads a real capture with
one item made hostile or malformed here; the Hugging Face source reads it from a real HTTP
server on 127.0.0.1.
"""

from __future__ import annotations

import copy
import datetime as dt
import html
import json
import logging
from typing import Any

import pytest

from newsletter.errors import ParseError
from newsletter.models import PaperData
from newsletter.sources import HuggingFace, arxiv, huggingface
from newsletter.sources.http import HttpClient
from newsletter.sources.parsing import Skipped
from tests.conftest import HF_API_BY_DATE, fixture_path
from tests.httpserver import FixtureServer, Reply

DAY = dt.date(2026, 5, 8)
FIRST = "2605.05242"  # the first paper of that day's capture
RSS_CL = "arxiv_rss_new_cs.cl_2026-04-27_3items_trimmed.rss.xml"
ATOM = "arxiv_api_query_cat_cs.LG_OR_cs.AI_2026-04-30_20entries.atom.xml"

# C0 controls, NUL, DEL, C1, and the bidi overrides and isolates: none may survive parsing.
HOSTILE = (
    "\x00\x01\x07\x08\x0e\x1b\x7f\x85\x9b\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
FORBIDDEN = set(HOSTILE)


def capture() -> list[Any]:
    items = json.loads(fixture_path(HF_API_BY_DATE[DAY.isoformat()]).read_bytes())
    assert isinstance(items, list)
    return items


def as_page(items: list[Any]) -> str:
    props = html.escape(json.dumps({"dailyPapers": items}), quote=True)
    return f'<html><body><div data-target="DailyPapers" data-props="{props}"></div></body></html>'


def texts(paper: PaperData) -> list[str]:
    return [
        paper.title,
        paper.abstract,
        *paper.authors,
        paper.ai_summary or "",
        *paper.ai_keywords,
        paper.organization or "",
        paper.arxiv_comment or "",
        *paper.categories,
    ]


def assert_clean(papers: list[PaperData]) -> None:
    for paper in papers:
        for value in texts(paper):
            assert not FORBIDDEN & set(value), (paper.id, value)
            assert "\n" not in value and "\t" not in value and "\r" not in value


# --- control and bidi characters ---------------------------------------------------------------


def hostile_hf_items() -> list[Any]:
    items = capture()
    item = items[0]
    paper = item["paper"]
    item["title"] = f"Deep{HOSTILE}Research\r\nAgents\tat scale"
    paper["summary"] = f"We{HOSTILE} show\x0b it."
    paper["ai_summary"] = "\u202eevil\u202c summary\x00"
    paper["ai_keywords"] = ["agentic\x00 search\u2066", "re\u202etrieval"]
    paper["authors"] = [{"name": "Ada\x00 \u202eLovelace"}]
    paper["organization"] = {"fullname": "Org\u2067anisation\x1b"}
    return items


def test_hf_api_text_is_cleaned() -> None:
    papers = huggingface.parse(json.dumps(hostile_hf_items()), "u", day=DAY)
    assert_clean(papers)
    paper = next(p for p in papers if p.id == FIRST)
    # The controls are gone; NEL (\x85) is a line break, so a space, like the CR LF and tab.
    assert paper.title == "Deep Research Agents at scale"
    assert paper.abstract == "We show it."
    assert paper.ai_keywords == ("agentic search", "retrieval")
    assert paper.authors == ("Ada Lovelace",)
    assert paper.organization == "Organisation"


def test_hf_page_text_is_cleaned() -> None:
    papers = huggingface.parse_page(as_page(hostile_hf_items()), "u/papers/date/2026-05-08")
    assert_clean(papers)
    assert next(p for p in papers if p.id == FIRST).title == "Deep Research Agents at scale"


def test_hf_cards_text_is_cleaned() -> None:
    body = fixture_path("hf_html_daily_2024-08-01_13papers.html").read_text("utf-8")
    body = body.replace('data-target="DailyPapers"', 'data-target="Gone"')  # the cards alone
    first = body.index("<article")
    title_at = body.index("<h3", first)
    link_end = body.index(">", body.index("<a", title_at)) + 1
    body = body[:link_end] + "&#x202E;\u2066" + body[link_end:]
    papers = huggingface.parse_page(body, "u/papers/date/2024-08-01")
    assert len(papers) == 13
    assert_clean(papers)


def test_arxiv_rss_and_atom_text_is_cleaned() -> None:
    # XML itself forbids most C0 controls; bidi controls and CR get through it.
    bidi = "&#x202E;&#x2066;&#13;"
    rss = fixture_path(RSS_CL).read_text("utf-8")
    rss = rss.replace("<title>When Cow", f"<title>When{bidi} Cow", 1)
    rss = rss.replace("<dc:creator>Anamta", f"<dc:creator>{bidi}Anamta", 1)
    rss = rss.replace("Abstract: Social", f"Abstract: {bidi}Social", 1)
    rss = rss.replace("<category>cs.CL</category>", f"<category>cs.CL{bidi}</category>", 1)
    papers = arxiv.parse(rss, "u")
    assert_clean(papers)
    assert papers[0].title.startswith("When Cow Urine")
    assert papers[0].authors[0] == "Anamta Khan"
    assert papers[0].categories == ("cs.CL",)

    atom = fixture_path(ATOM).read_text("utf-8")
    atom = atom.replace("<title>", f"<title>{bidi}").replace("<name>", f"<name>{bidi}")
    atom = atom.replace("<summary>", f"<summary>{bidi}")
    papers = arxiv.parse(atom, "u")
    assert len(papers) == 20
    assert_clean(papers)


# --- paper ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pid",
    [
        "2405.157",  # too few digits
        "2405.157381",  # too many
        "24051.5738",
        "../../etc/passwd",
        "2405.15738/../x",
        "hep-th/99",
        "HEP-TH/9901001",
        "\uff12\uff14\uff10\uff15.\uff11\uff15\uff17\uff13\uff18",  # full-width digits
        "2405.15738\u202e",
        "2405.15738v",
        "",
    ],
)
def test_a_malformed_hf_id_drops_its_item_only(pid: str) -> None:
    items = capture()
    items[0]["paper"]["id"] = pid
    skipped: list[Skipped] = []
    papers = huggingface.parse(json.dumps(items), "u", day=DAY, skipped=skipped)
    assert len(papers) == 36 and FIRST not in {p.id for p in papers}
    [item] = skipped
    assert (item.index, item.day, item.field) == (0, DAY, "id")


@pytest.mark.parametrize(
    ("pid", "kept"),
    [
        ("2405.15738", "2405.15738"),
        ("2405.15738v12", "2405.15738"),
        ("0704.0001", "0704.0001"),
        ("hep-th/9901001", "hep-th/9901001"),
        ("math.GT/0309136v2", "math.GT/0309136"),
    ],
)
def test_well_formed_ids_new_and_old_style_are_kept(pid: str, kept: str) -> None:
    items = capture()[:1]
    items[0]["paper"]["id"] = pid
    [paper] = huggingface.parse(json.dumps(items), "u", day=DAY)
    assert paper.id == kept


def test_a_malformed_arxiv_id_drops_its_entry_only() -> None:
    atom = fixture_path(ATOM).read_text("utf-8")
    first_id = atom.index("<id>http://arxiv.org/abs/", atom.index("<entry>"))
    atom = (
        atom[:first_id]
        + "<id>http://arxiv.org/abs/24051.5738v1</id>"
        + atom[atom.index("</id>", first_id) + len("</id>") :]
    )
    skipped: list[Skipped] = []
    papers = arxiv.parse(atom, "u", skipped=skipped)
    assert len(papers) == 19
    [item] = skipped
    assert (item.index, item.field, item.paper) == (0, "id", "'24051.5738v1'")


# --- thumbnails ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/1.png", True),
        ("https://huggingface.co/front/thumbnails/papers.png", True),
        ("https://huggingface.co:443/x.png", True),
        ("http://cdn-thumbnails.huggingface.co/x.png", False),
        ("https://huggingface.co.evil.test/x.png", False),
        ("https://evilhuggingface.co/x.png", False),
        ("https://evil.test/huggingface.co/x.png", False),
        ("https://huggingface.co@evil.test/x.png", False),
        ("https://evil.test\\@huggingface.co/x.png", False),
        ("https://user@huggingface.co/x.png", False),
        ("https://huggingface.co:8443/x.png", False),
        ("https://huggingface.co:99999/x.png", False),
        ("https://huggingface.co/x.png\r\nX: y", False),
        ("javascript:alert(1)//huggingface.co", False),
        ("//huggingface.co/x.png", False),
    ],
)
def test_thumbnails_only_from_https_huggingface_co(url: str, kept: bool) -> None:
    items = capture()[:1]
    items[0]["thumbnail"] = url
    [from_api] = huggingface.parse(json.dumps(items), "u", day=DAY)
    [from_page] = huggingface.parse_page(as_page(items), "u/papers/date/2026-05-08")
    assert from_api.thumbnail == from_page.thumbnail == (url if kept else None)


def test_card_thumbnails_only_from_https_huggingface_co() -> None:
    body = fixture_path("hf_html_daily_2024-08-01_13papers.html").read_text("utf-8")
    body = body.replace('data-target="DailyPapers"', 'data-target="Gone"')
    body = body.replace("https://cdn-thumbnails.huggingface.co/", "https://evil.test/", 1)
    papers = huggingface.parse_page(body, "u/papers/date/2024-08-01")
    thumbs = [p.thumbnail for p in papers]
    assert thumbs.count(None) == 1
    assert all(t is None or t.startswith("https://cdn-thumbnails.huggingface.co/") for t in thumbs)


# --- one bad item, the rest of the list ----------------------------------------------------------


def test_a_bad_item_is_skipped_in_each_parser_and_named() -> None:
    items = capture()
    items[0]["paper"]["githubStars"] = "1.2k"
    expected = Skipped(0, FIRST, DAY, "githubStars", "'githubStars' should be an integer, got str")

    api: list[Skipped] = []
    assert len(huggingface.parse(json.dumps(items), "u", day=DAY, skipped=api)) == 36
    page: list[Skipped] = []
    assert (
        len(huggingface.parse_page(as_page(items), "u/papers/date/2026-05-08", skipped=page)) == 36
    )
    assert api == page == [expected]

    rss = fixture_path(RSS_CL).read_text("utf-8")
    rss = rss.replace(
        "<pubDate>Mon, 27 Apr 2026 00:00:00 -0400</pubDate>\n      <arxiv",
        "<pubDate>someday</pubDate>\n      <arxiv",
        1,
    )
    feed: list[Skipped] = []
    assert len(arxiv.parse(rss, "u", skipped=feed)) == 2
    [item] = feed
    assert (item.paper, item.day, item.field) == ("2604.22002v1", dt.date(2026, 4, 27), "pubDate")


def test_a_list_of_nothing_but_bad_items_is_still_an_error() -> None:
    items = copy.deepcopy(capture()[:2])
    for item in items:
        item["paper"]["upvotes"] = "many"
    with pytest.raises(ParseError, match=r"item 0: 'upvotes' should be an integer.*1 more"):
        huggingface.parse(json.dumps(items), "u", day=DAY)


def test_the_source_warns_once_per_skipped_item_naming_day_paper_and_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    items = capture()
    items[3]["paper"]["githubStars"] = "1.2k"
    items[5]["paper"]["id"] = "2605.0524\u202e"
    with FixtureServer() as server, HttpClient(retries=0) as client:
        server.routes["/api/daily_papers"] = lambda req: Reply(200, json.dumps(items).encode())
        source = HuggingFace(server.url, client)
        caplog.set_level(logging.WARNING, logger="newsletter.sources")
        assert len(source.fetch_day(DAY)) == 35
        assert source.latest_day(DAY) == DAY  # reads the day again: no second warning
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "fetch.item_skipped source=huggingface day=2026-05-08 paper=2605.06416 "
        "field=githubStars problem='githubStars' should be an integer, got str",
        "fetch.item_skipped source=huggingface day=2026-05-08 paper='2605.0524\\u202e' "
        "field=id problem=id '2605.0524\\u202e' is not an arXiv id",
    ]
