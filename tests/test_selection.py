"""Selection, first version: keywords of a subscriber's topics, excludes, ranking, caps."""

from __future__ import annotations

import datetime as dt

import pytest

from newsletter import selection
from newsletter.models import PaperData, Subscriber, Topic

NOW = dt.datetime(2026, 5, 8, 12, tzinfo=dt.UTC)
DAY = NOW.date()


def paper(
    pid: str, title: str, upvotes: int = 1, abstract: str = "", keywords: tuple[str, ...] = ()
) -> PaperData:
    return PaperData(
        id=pid, title=title, day=DAY, upvotes=upvotes, abstract=abstract, ai_keywords=keywords
    )


def sub(*topics: str, max_papers: int = 10, min_upvotes: int = 0) -> Subscriber:
    return Subscriber(
        email="ada@example.org", topics=topics, max_papers=max_papers, min_upvotes=min_upvotes
    )


@pytest.mark.parametrize(
    ("keyword", "text", "hit"),
    [
        ("diffusion", "Latent Diffusion Models", True),
        ("diffusion", "DIFFUSION everywhere", True),
        ("diffusion", "Diffusion-based planners", True),
        ("diffusion", "(diffusion)", True),
        ("diffusion", "diffusions of light", False),
        ("diffusion", "superdiffusion", False),
        ("diffusion", "diffusion2", False),
        ("flow matching", "Flow  Matching for generation", True),
        ("flow matching", "flow-matching policies", True),
        ("flow-matching", "flow matching policies", True),
        ("flow matching", "flow of matching", False),
        ("C++", "a C++ compiler", True),  # punctuation in a keyword is kept literally
        ("LLM", "LLMs", False),
        ("3D", "3D generation", True),
    ],
)
def test_keywords_match_whole_words_and_phrases(keyword: str, text: str, hit: bool) -> None:
    pattern = selection.compile_terms([keyword])
    assert pattern is not None
    assert bool(pattern.search(text)) is hit


def test_match_looks_at_title_abstract_and_ai_keywords_strongest_first() -> None:
    papers = [
        paper("1", "Diffusion in the title", abstract="diffusion again"),
        paper("2", "Nothing", abstract="we use diffusion"),
        paper("3", "Nothing", keywords=("diffusion models",)),
        paper("4", "Nothing", abstract="nothing"),
    ]
    m = selection.match_topics(papers, {"d": Topic("d", ("diffusion",))})
    assert {pid: x.field for pid, x in m.by_topic["d"].items()} == {
        "1": "title",
        "2": "abstract",
        "3": "ai_keywords",
    }


def test_exclude_removes_a_paper_anywhere() -> None:
    papers = [
        paper("1", "A survey of diffusion"),
        paper("2", "Diffusion", abstract="In this Survey"),
    ]
    m = selection.match_topics(papers, {"d": Topic("d", ("diffusion",), exclude=("survey",))})
    assert m.by_topic["d"] == {}


def test_select_ranks_by_upvotes_then_id_and_caps() -> None:
    papers = [
        paper("c", "diffusion", 5),
        paper("a", "diffusion", 5),
        paper("b", "diffusion", 9),
        paper("d", "diffusion", 1),
    ]
    m = selection.match_topics(papers, {"d": Topic("d", ("diffusion",))})
    digest = selection.select(m, sub("d", max_papers=3), frozenset(), NOW)
    assert digest.paper_ids == ("b", "a", "c")


def test_select_min_upvotes_and_sent_ids() -> None:
    papers = [paper("a", "diffusion", 5), paper("b", "diffusion", 9), paper("c", "diffusion", 2)]
    m = selection.match_topics(papers, {"d": Topic("d", ("diffusion",))})
    digest = selection.select(m, sub("d", min_upvotes=3), frozenset({"b"}), NOW)
    assert digest.paper_ids == ("a",)


def test_a_paper_in_two_topics_comes_once_with_its_first_topic() -> None:
    papers = [paper("a", "diffusion for video", 5)]
    topics = {"d": Topic("d", ("diffusion",)), "v": Topic("v", ("video",))}
    m = selection.match_topics(papers, topics)
    (pick,) = selection.select(m, sub("v", "d"), frozenset(), NOW).picks
    assert (pick.topic, pick.keyword, pick.field) == ("v", "video", "title")
    assert pick.reason == 'matched "video" in title · 5 upvotes'


def test_reason_names_the_keyword_as_the_operator_wrote_it() -> None:
    m = selection.match_topics(
        [paper("a", "FLOW-MATCHING", 1)], {"f": Topic("f", ("flow matching",))}
    )
    (pick,) = selection.select(m, sub("f"), frozenset(), NOW).picks
    assert pick.keyword == "flow matching"
    assert pick.reason == 'matched "flow matching" in title · 1 upvote'


def test_nothing_matches_gives_an_empty_digest() -> None:
    m = selection.match_topics([paper("a", "robots", 5)], {"d": Topic("d", ("diffusion",))})
    assert selection.select(m, sub("d"), frozenset(), NOW).picks == ()
