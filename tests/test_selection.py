"""Selection, first version: keywords of a subscriber's topics, excludes, ranking, caps."""

from __future__ import annotations

import datetime as dt
import re
import string
import sys

import pytest

from newsletter import selection
from newsletter.models import PaperData, Subscriber, Topic, Trend, Weights
from newsletter.selection import match

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


# -- topics beyond keywords ---------------------------------------------------------------


def test_authors_organizations_and_categories() -> None:
    papers = [
        PaperData(id="1", title="x", day=DAY, authors=("Yann LeCun", "B")),
        PaperData(id="2", title="x", day=DAY, organization="Meta AI"),
        PaperData(id="3", title="x", day=DAY, categories=("cs.CL", "cs.AI")),
        PaperData(
            id="4", title="x", day=DAY, authors=("Yannick Lecunningham",), organization="Metamorph"
        ),
    ]
    topics = {
        "a": Topic("a", authors=("LeCun",)),
        "o": Topic("o", organizations=("meta ai",)),
        "c": Topic("c", categories=("cs.cl",)),
    }
    m = selection.match_topics(papers, topics)
    assert {
        t: {pid: (x.keyword, x.field) for pid, x in v.items()} for t, v in m.by_topic.items()
    } == {
        "a": {"1": ("Yann LeCun", "authors")},
        "o": {"2": ("Meta AI", "organization")},
        "c": {"3": ("cs.CL", "categories")},
    }


def test_personal_keywords_and_excludes() -> None:
    papers = [
        paper("1", "Diffusion survey", 9),
        paper("2", "Mamba layers", 5),
        paper("3", "Diffusion", 1),
    ]
    ada = Subscriber(email="ada@x.org", topics=("d",), keywords=("mamba",), exclude=("survey",))
    bob = Subscriber(email="bob@x.org", topics=("d",))
    topics = selection.topics_for_run({"d": Topic("d", ("diffusion",))}, [ada, bob])
    assert len(topics) == 3  # d, ada's keywords, ada's excludes
    m = selection.match_topics(papers, topics)
    picks = selection.select(m, ada, frozenset(), NOW).picks
    assert sorted(p.paper.id for p in picks) == ["2", "3"]
    assert next(p for p in picks if p.paper.id == "2").topic == "Your keywords"
    assert sorted(selection.select(m, bob, frozenset(), NOW).paper_ids) == ["1", "3"]


def test_identical_personal_lists_share_one_topic() -> None:
    subs = [
        Subscriber(email=f"{i}@x.org", topics=("d",), keywords=("Mamba", "rwkv")) for i in range(50)
    ]
    subs.append(Subscriber(email="z@x.org", topics=("d",), keywords=("rwkv", "mamba")))
    assert len(selection.topics_for_run({"d": Topic("d", ("x",))}, subs)) == 2


# -- the token prefilter: papers are searched only where a keyword's words are -------------


@pytest.mark.parametrize(
    ("keyword", "where", "text", "field"),
    [
        ("ok", "title", "o\u212a, with a KELVIN SIGN", "title"),  # re.IGNORECASE: K is k
        ("sign", "abstract", "\u017fign, with a LONG S", "abstract"),
        ("Istanbul", "title", "\u0130stanbul", "title"),  # 'İ'.lower() is two characters
        ("is", "ai_keywords", "\u0131s", "ai_keywords"),  # joined with " · ": not ASCII
        ("C++", "abstract", "written in C++.", "abstract"),
        ("C++", "abstract", "written in C#", None),
        ("++", "title", "a ++ b", "title"),  # no letters or digits: searched everywhere
        (".NET", "title", "on .NET 8", "title"),
        ("net", "title", "on .NET 8", "title"),
        ("3D", "ai_keywords", "3D-aware generation", "ai_keywords"),
        ("3D", "title", "23D", None),
        ("x", "title", "x_y", "title"),  # an underscore separates words
        ("x_y", "abstract", "X_Y", "abstract"),
        ("flow matching", "abstract", "flow\nmatching", "abstract"),
        ("flow matching", "abstract", "matching the flow", None),  # both words, not the phrase
        ("diffusion", "title", "superdiffusion", None),
        ("diffusion", "title", "diffusion\u00e9", None),  # glued to a non-ASCII letter
        ("na\u00efve", "title", "NA\u00cfVE Bayes", "title"),  # a non-ASCII keyword
    ],
)
def test_prefilter_finds_what_searching_every_paper_finds(
    keyword: str, where: str, text: str, field: str | None
) -> None:
    texts: dict[str, str] = {"title": "Nothing", "abstract": "", where: text}
    p = PaperData(
        id="1",
        title=texts["title"],
        abstract=texts["abstract"],
        ai_keywords=("other", text) if where == "ai_keywords" else (),
        day=DAY,
    )
    ada = Subscriber(email="ada@x.org", topics=("t",), keywords=(keyword,))
    topics = selection.topics_for_run({"t": Topic("t", (keyword,))}, [ada])
    mine = selection.personal_topic_name(ada)
    assert mine is not None
    fast = selection.match_topics([p], topics)
    reference = selection.match_topics([p], topics, reference=True)
    for name in ("t", mine):
        assert dict(fast.by_topic[name]) == dict(reference.by_topic[name])
        found = {pid: x.field for pid, x in fast.by_topic[name].items()}
        assert found == ({} if field is None else {"1": field})


def test_prefilter_keeps_excludes_that_only_match_ignoring_case() -> None:
    p = PaperData(id="1", title="Diffusion", abstract="o\u212a, with a KELVIN SIGN", day=DAY)
    topics = {"t": Topic("t", ("diffusion",), exclude=("OK",))}
    assert selection.match_topics([p], topics, reference=True).by_topic["t"] == {}
    assert selection.match_topics([p], topics).by_topic["t"] == {}


def test_fold_table_holds_every_non_ascii_character_ignorecase_pairs_with_ascii() -> None:
    """Found by trying every code point, as this does; each a letter, so runs stay whole."""
    every = "".join(chr(c) for c in range(0x80, sys.maxunicode + 1) if not 0xD800 <= c < 0xE000)
    paired = {
        c: a.lower()
        for a in string.ascii_letters + string.digits
        for c in re.findall("(?i)" + a, every)
    }
    assert paired == match.IGNORECASE_ASCII
    assert all(c.isalnum() for c in paired)


# -- ranking ------------------------------------------------------------------------------


W = Weights()


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        (dict(upvotes=50), dict(upvotes=10), "more upvotes"),
        (dict(field="title"), dict(field="abstract"), "title beats abstract"),
        (dict(trend=Trend(40, 24)), dict(trend=None), "gaining upvotes"),
        (dict(age=0), dict(age=4), "newer"),
    ],
)
def test_ranking_factors(a: dict[str, object], b: dict[str, object], why: str) -> None:
    def value(upvotes: int = 20, field: str = "title", trend: object = None, age: int = 0) -> float:
        p = PaperData(id="x", title="t", day=DAY - dt.timedelta(days=age), upvotes=upvotes)
        return selection.score(p, selection.Match("t", "k", field), trend, NOW, W)  # type: ignore[arg-type]

    assert value(**a) > value(**b), why  # type: ignore[arg-type]


def test_title_match_can_outrank_a_few_more_upvotes() -> None:
    papers = [paper("a", "nothing", 12, abstract="diffusion"), paper("b", "diffusion", 10)]
    m = selection.match_topics(papers, {"d": Topic("d", ("diffusion",))})
    assert selection.select(m, sub("d"), frozenset(), NOW).paper_ids == ("b", "a")


def test_reason_includes_the_trend() -> None:
    p = paper("a", "diffusion", 154)
    m = selection.match_topics([p], {"d": Topic("d", ("diffusion",))}, trends={"a": Trend(40, 22)})
    (pick,) = selection.select(m, sub("d"), frozenset(), NOW).picks
    assert pick.reason == 'matched "diffusion" in title · 154 upvotes, +40 since yesterday'


# -- windows ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cadence", "last", "max_age", "expected"),
    [
        ("daily", None, 7, DAY - dt.timedelta(days=6)),  # first digest: max_age_days
        ("daily", DAY - dt.timedelta(days=1), 7, DAY - dt.timedelta(days=1)),
        ("daily", DAY - dt.timedelta(days=3), 7, DAY - dt.timedelta(days=3)),  # a weekend
        ("daily", DAY - dt.timedelta(days=30), 7, DAY - dt.timedelta(days=6)),  # bounded
        ("daily", DAY, 7, DAY),
        ("weekly", None, 2, DAY - dt.timedelta(days=6)),
        ("weekly", DAY - dt.timedelta(days=1), 7, DAY - dt.timedelta(days=6)),
    ],
)
def test_window_start(cadence: str, last: dt.date | None, max_age: int, expected: dt.date) -> None:
    s = Subscriber(email="a@x.org", topics=("d",), cadence=cadence)  # type: ignore[arg-type]
    assert selection.window_start(s, DAY, last, max_age) == expected


def test_papers_outside_the_window_are_not_picked() -> None:
    old = PaperData(id="old", title="diffusion", day=DAY - dt.timedelta(days=3), upvotes=99)
    future = PaperData(id="future", title="diffusion", day=DAY + dt.timedelta(days=1), upvotes=99)
    m = selection.match_topics(
        [old, future, paper("now", "diffusion")], {"d": Topic("d", ("diffusion",))}
    )
    digest = selection.select(m, sub("d"), frozenset(), NOW, since=DAY - dt.timedelta(days=1))
    assert digest.paper_ids == ("now",)


def test_low_upvote_papers_are_reported_as_skipped_and_can_rise() -> None:
    old = PaperData(id="slow", title="diffusion", day=DAY - dt.timedelta(days=3), upvotes=30)
    m = selection.match_topics(
        [old, paper("low", "diffusion", 2)], {"d": Topic("d", ("diffusion",))}
    )
    s = sub("d", min_upvotes=10)
    first = selection.select(m, s, frozenset(), NOW, since=DAY)
    assert first.paper_ids == () and first.skipped_ids == ("low",)
    again = selection.select(m, s, frozenset(), NOW, since=DAY, skipped=frozenset({"slow", "low"}))
    (pick,) = again.picks
    assert pick.paper.id == "slow" and pick.rising and pick.reason.startswith("Rising: ")


def test_sections_trending_first_then_by_topic() -> None:
    papers = [paper(str(i), "diffusion" if i % 2 else "video", 100 - i) for i in range(8)]
    topics = {"d": Topic("d", ("diffusion",)), "v": Topic("v", ("video",))}
    m = selection.match_topics(papers, topics)
    s = Subscriber(email="a@x.org", topics=("v", "d"), sections=True)
    digest = selection.select(m, s, frozenset(), NOW, trending_count=2)
    assert [(name, [p.paper.id for p in picks]) for name, picks in digest.sections] == [
        ("Trending across your topics", ["0", "1"]),
        ("v", ["2", "4", "6"]),
        ("d", ["3", "5", "7"]),
    ]


def test_sections_are_headed_by_the_topics_display_names() -> None:
    papers = [paper(str(i), "diffusion" if i % 2 else "video", 100 - i) for i in range(8)]
    topics = {
        "d": Topic("d", ("diffusion",), display_name="Diffusion models"),
        "v": Topic("v", ("video",), display_name="Video generation"),
    }
    m = selection.match_topics(papers, topics)
    s = Subscriber(email="a@x.org", topics=("v", "d"), sections=True)
    digest = selection.select(m, s, frozenset(), NOW, trending_count=2)
    # The subscriber's order of topics, under their names; the pick still knows its topic.
    assert [(name, [p.paper.id for p in picks]) for name, picks in digest.sections] == [
        ("Trending across your topics", ["0", "1"]),
        ("Video generation", ["2", "4", "6"]),
        ("Diffusion models", ["3", "5", "7"]),
    ]
    assert {p.topic for p in digest.picks} == {"d", "v"}
