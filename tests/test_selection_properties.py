"""Properties of select() over generated papers, topics and subscribers."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from newsletter import selection
from newsletter.models import PaperData, Subscriber, Topic, Trend
from newsletter.selection import match

NOW = dt.datetime(2026, 5, 8, 12, tzinfo=dt.UTC)
WORDS = [
    "diffusion",
    "video",
    "robot",
    "survey",
    "agent",
    "graph",
    "Diffusion-based",
    "flow matching",
]

papers_st = st.lists(
    st.builds(
        lambda i, words, up, age, abstract: PaperData(
            id=f"2605.{i:05d}",
            title=" ".join(words),
            abstract=" ".join(abstract),
            day=NOW.date() - dt.timedelta(days=age),
            upvotes=up,
        ),
        st.integers(0, 60),
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=4),
        st.integers(0, 200),
        st.integers(0, 10),
        st.lists(st.sampled_from(WORDS), max_size=4),
    ),
    max_size=40,
    unique_by=lambda p: p.id,
)
topics_st = st.dictionaries(
    st.sampled_from(["t1", "t2", "t3"]),
    st.builds(
        lambda kw, ex: (tuple(kw), tuple(ex)),
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
        st.lists(st.sampled_from(["survey", "graph"]), max_size=1),
    ),
    min_size=1,
)


@st.composite
def scenario(
    draw: st.DrawFn,
) -> tuple[list[PaperData], dict[str, Topic], Subscriber, frozenset[str], dt.date]:
    papers = draw(papers_st)
    raw = draw(topics_st)
    topics = {n: Topic(n, keywords=kw, exclude=ex) for n, (kw, ex) in raw.items()}
    sub = Subscriber(
        email="a@x.org",
        topics=tuple(draw(st.lists(st.sampled_from(sorted(topics)), min_size=1, unique=True))),
        max_papers=draw(st.integers(1, 15)),
        min_upvotes=draw(st.integers(0, 100)),
        exclude=tuple(draw(st.lists(st.sampled_from(["video", "agent"]), max_size=1))),
        keywords=tuple(draw(st.lists(st.sampled_from(WORDS), max_size=2))),
    )
    sent = frozenset(draw(st.lists(st.sampled_from([p.id for p in papers] or ["x"]), max_size=5)))
    since = NOW.date() - dt.timedelta(days=draw(st.integers(0, 10)))
    return papers, topics, sub, sent, since


def eligible(
    papers: list[PaperData],
    topics: dict[str, Topic],
    sub: Subscriber,
    sent: frozenset[str],
    since: dt.date,
) -> set[str]:
    """The rule, written out plainly: matched by one of the subscriber's topics or own keywords, not excluded."""

    def has(text: str, terms: tuple[str, ...]) -> bool:
        pattern = selection.compile_terms(terms)
        return bool(pattern and pattern.search(text))

    out = set()
    for p in papers:
        text = [p.title, p.abstract]
        if p.id in sent or p.upvotes < sub.min_upvotes or not (since <= p.day <= NOW.date()):
            continue
        if any(has(t, sub.exclude) for t in text):
            continue
        chosen = [topics[n] for n in sub.topics]
        if any(
            any(has(t, tp.keywords) for t in text) and not any(has(t, tp.exclude) for t in text)
            for tp in chosen
        ) or any(has(t, sub.keywords) for t in text):
            out.add(p.id)
    return out


@given(scenario())
def test_select_properties(
    case: tuple[list[PaperData], dict[str, Topic], Subscriber, frozenset[str], dt.date],
) -> None:
    papers, topics, sub, sent, since = case
    m = selection.match_topics(papers, selection.topics_for_run(topics, [sub]))
    digest = selection.select(m, sub, sent, NOW, since=since)
    ids = digest.paper_ids
    assert len(ids) == len(set(ids)), "a paper twice"
    assert len(ids) <= sub.max_papers, "over the cap"
    assert not set(ids) & sent, "already sent"
    by_id = {p.id: p for p in papers}
    assert all(by_id[i].upvotes >= sub.min_upvotes for i in ids), "under min_upvotes"
    expected = eligible(papers, topics, sub, sent, since)
    assert set(ids) <= expected, (
        "picked something not eligible (excluded, out of window, unmatched)"
    )
    if len(ids) < sub.max_papers:
        assert set(ids) == expected, "an eligible paper was left out with room to spare"
    # Same input, same output (and the order does not depend on the input order).
    again = selection.select(
        selection.match_topics(list(reversed(papers)), selection.topics_for_run(topics, [sub])),
        sub,
        sent,
        NOW,
        since=since,
    )
    assert again == digest


# -- the merge of ranked lists is the plain scan, faster ------------------------------------


@st.composite
def many_subscribers(
    draw: st.DrawFn,
) -> tuple[list[PaperData], dict[str, Topic], list[Subscriber], dict[str, Trend]]:
    papers = draw(papers_st)
    raw = draw(topics_st)
    topics = {n: Topic(n, keywords=kw, exclude=ex) for n, (kw, ex) in raw.items()}
    subs = []
    for i in range(draw(st.integers(1, 4))):
        subs.append(
            Subscriber(
                email=f"s{i}@x.org",
                topics=tuple(
                    draw(st.lists(st.sampled_from(sorted(topics)), min_size=1, unique=True))
                ),
                max_papers=draw(st.integers(0, 15)),
                min_upvotes=draw(st.sampled_from([0, 0, 5, 50])),
                exclude=tuple(draw(st.lists(st.sampled_from(WORDS), max_size=2))),
                keywords=tuple(draw(st.lists(st.sampled_from(WORDS), max_size=3))),
                sections=draw(st.booleans()),
            )
        )
    trends = {
        p.id: Trend(draw(st.integers(-5, 50)), draw(st.sampled_from([0.0, 12.0, 30.0])))
        for p in papers
        if draw(st.booleans())
    }
    return papers, topics, subs, trends


@given(many_subscribers(), st.data())
def test_merged_ranking_equals_the_plain_scan(
    case: tuple[list[PaperData], dict[str, Topic], list[Subscriber], dict[str, Trend]],
    data: st.DataObject,
) -> None:
    papers, topics, subs, trends = case
    m = selection.match_topics(papers, selection.topics_for_run(topics, subs), trends=trends)
    ids = [p.id for p in papers] or ["x"]
    for sub in subs:
        sent = frozenset(data.draw(st.lists(st.sampled_from(ids), max_size=5)))
        skipped = frozenset(data.draw(st.lists(st.sampled_from(ids), max_size=5)))
        since = NOW.date() - dt.timedelta(days=data.draw(st.integers(0, 10)))
        merged = selection.select(m, sub, sent, NOW, since=since, skipped=skipped)
        plain = selection.select(m, sub, sent, NOW, since=since, skipped=skipped, reference=True)
        assert merged == plain


@given(papers_st, st.lists(st.sampled_from([*WORDS, "Flow-Matching", "video graph"]), max_size=4))
def test_personal_topic_matches_like_one_pattern(
    papers: list[PaperData], keywords: list[str]
) -> None:
    """A personal topic is assembled from its keywords' matches, as one pattern would find."""
    sub = Subscriber(email="a@x.org", topics=("t",), keywords=tuple(keywords))
    name = selection.personal_topic_name(sub)
    m = selection.match_topics(papers, selection.topics_for_run({"t": Topic("t", ("x",))}, [sub]))
    if name is None:
        assert not keywords
        return
    one_pattern = selection.match_topics(
        papers, {name: Topic(name, keywords=tuple(keywords), exclude=("never-ever",))}
    )
    assert dict(m.by_topic[name]) == {
        pid: selection.Match(name, x.keyword, x.field)
        for pid, x in one_pattern.by_topic[name].items()
    }


TERM_PIECES = ["ab", "AB", "a-b", "a b", "b", "x1", "_", "é", "É", "K", "ſ", "C++", "(a)", ".", "-"]


@given(
    st.lists(st.sampled_from(TERM_PIECES), min_size=1, max_size=3),
    st.lists(st.sampled_from([*TERM_PIECES, " ", "  ", "-", "\n", "z", "9", "·"]), max_size=20),
)
def test_fast_search_finds_what_the_pattern_finds(terms: list[str], pieces: list[str]) -> None:
    text = "".join(pieces)
    matcher = match.Terms(terms)
    assert matcher.pattern is not None
    m = matcher.pattern.search(text)
    expected = (m.start(), m.group(0)) if m else None
    assert matcher.search(text, text.lower() if text.isascii() else None) == expected


# -- the token prefilter finds what searching every paper finds -----------------------------

# Text pieces glued together at random, so words run into each other and into punctuation;
# some hold the non-ASCII letters re.IGNORECASE pairs with ASCII ones (KELVIN SIGN, LONG S,
# dotted and dotless i).
TEXT_PIECES = [
    *("diffusion", "Diffusion-based", "superdiffusion", "DIFFUSIONS", "flow", "Matching"),
    *("C++", "c", "C#", ".NET", "net", "3D", "23d", "x_y", "x", "y_", "ok", "o\u212a", "\u212a"),
    *("\u017fign", "sign", "\u0130s", "\u0131s", "is", "na\u00efve", "\u00e9", "\u00c9t\u00e9"),
    *(" ", "  ", "-", "--", "\n", " \u00b7 ", "_", "(", ")", ".", ",", "+", "9", "\u00a0"),
]
TERMS = [
    *("diffusion", "Diffusion", "DIFFUSION based", "flow matching", "flow-matching"),
    *("Flow\nMatching", "C++", "c", "++", ".NET", "net", "NET", "3D", "3d", "x_y", "x", "y"),
    *("_", "ok", "OK", "sign", "SIGN", "is", "i", "s", "na\u00efve", "\u00e9t\u00e9", "\u212a"),
    *("diffusion x", "x-y", "c ++", "(x)", "9", "-"),
]
text_st = st.lists(st.sampled_from(TEXT_PIECES), max_size=12).map("".join)
terms_st = st.lists(st.sampled_from(TERMS), max_size=3).map(tuple)


@st.composite
def tricky_run(draw: st.DrawFn) -> tuple[list[PaperData], dict[str, Topic]]:
    papers = [
        PaperData(
            id=f"p{i}",
            title=draw(text_st),
            abstract=draw(text_st),
            ai_keywords=tuple(draw(st.lists(text_st, max_size=3))),
            day=NOW.date(),
            organization=draw(st.sampled_from(["", "Meta AI", "NET Labs"])),
            categories=tuple(draw(st.lists(st.sampled_from(["cs.CL", "cs.CV"]), max_size=1))),
        )
        for i in range(draw(st.integers(0, 8)))
    ]
    topics = {
        f"t{i}": Topic(
            f"t{i}",
            keywords=draw(terms_st),
            exclude=draw(terms_st),
            organizations=draw(st.sampled_from([(), ("meta",)])),
            categories=draw(st.sampled_from([(), ("cs.cl",)])),
        )
        for i in range(draw(st.integers(0, 3)))
    }
    subs = [
        Subscriber(email=f"s{i}@x.org", topics=(), keywords=draw(terms_st), exclude=draw(terms_st))
        for i in range(draw(st.integers(0, 3)))
    ]
    return papers, selection.topics_for_run(topics, subs)


@given(tricky_run())
def test_match_topics_equals_searching_every_paper(
    case: tuple[list[PaperData], dict[str, Topic]],
) -> None:
    papers, topics = case
    fast = selection.match_topics(papers, topics)
    reference = selection.match_topics(papers, topics, reference=True)
    assert list(fast.by_topic) == list(reference.by_topic) == list(topics)
    for name in topics:
        assert dict(fast.by_topic[name]) == dict(reference.by_topic[name]), name
        assert list(fast.by_topic[name]) == list(reference.by_topic[name]), "another order"
    assert isinstance(fast.by_topic, match.TopicMatches)
    assert isinstance(reference.by_topic, match.TopicMatches)
    for topic in topics.values():
        if topic.name in fast.by_topic.personal:
            for term in topic.keywords:
                if term.strip():
                    for p in papers:
                        assert fast.by_topic.hit(term, p.id) == reference.by_topic.hit(term, p.id)
