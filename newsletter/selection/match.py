"""Which papers each subscriber gets. Pure: no clock, disk or network in here.

``match_topics(papers, topics)`` runs once per run: each topic's keywords are compiled into
one pattern, searched for only in the papers whose text holds every word of a keyword (an
index of the papers' words, built once per run, tells which). A subscriber's own keywords
and excludes become topics of their own, shared by everyone with the same list, and each
distinct keyword is matched once. ``select(matches, subscriber, sent_ids, now)`` then builds
one digest by set look-ups, so the cost per subscriber does not grow with the number of
keywords or papers matched by nobody.

Matching
    Keywords match whole words and phrases, case-insensitively, in the title, the AI
    keywords and the abstract (the strongest field wins). "Whole word" means the keyword is
    not glued to a letter or digit on either side: ``diffusion`` matches "Diffusion-based"
    and "(diffusion)" but not "diffusions" or "superdiffusion". Plurals are not guessed:
    list "model" and "models" if you want both. Whitespace inside a phrase matches any run of
    whitespace, and a hyphen matches a hyphen or a space ("flow matching" also finds
    "flow-matching", and the other way round). ``exclude`` terms veto a paper when they
    appear in any of those fields. ``authors`` and ``organizations`` match whole words of an
    author's or the organization's name ("LeCun" finds "Yann LeCun"); ``categories`` match
    arXiv categories exactly ("cs.CL").

Ranking
    score = (w.upvotes * ln(1 + upvotes) + w.velocity * ln(1 + upvotes gained per day)
             + w.match * strength) * 0.5 ** (age in days / w.half_life_days)
    where strength is 1.0 for a match in the title or an author, 0.8 organization, 0.6 AI
    keywords, 0.4 abstract, 0.3 category. Ties go to the lower paper id.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import hashlib
import heapq
import math
import re
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from newsletter.models import Digest, PaperData, Pick, Subscriber, Topic, Trend

TEXT_FIELDS = ("title", "ai_keywords", "abstract")  # in order of strength
STRENGTH = {
    "title": 1.0,
    "authors": 1.0,
    "organization": 0.8,
    "ai_keywords": 0.6,
    "abstract": 0.4,
    "categories": 0.3,
}
TRENDING_SECTION = "Trending across your topics"
RISING_SECTION = "Rising"
PERSONAL_SECTION = "Your keywords"


@dataclass(frozen=True, slots=True)
class Weights:
    """``selection.weights``; the defaults favour what the community upvotes, and fast."""

    upvotes: float = 1.0
    velocity: float = 1.5
    match: float = 2.0
    half_life_days: float = 3.0


@dataclass(frozen=True, slots=True)
class Match:
    """Why one paper matched one topic: the term and the strongest field it was in."""

    topic: str
    keyword: str
    field: str


@dataclass(frozen=True, slots=True)
class Matches:
    """The result of matching every topic against every paper, once per run."""

    papers: Mapping[str, PaperData]
    by_topic: Mapping[str, Mapping[str, Match]]  # topic -> paper id -> match
    trends: Mapping[str, Trend] = field(default_factory=dict)
    #: What a section heading calls a topic (``Topic.display_name``), for those that have one.
    names: Mapping[str, str] = field(default_factory=dict)
    #: Ranked hit lists, built on first use by ``select`` and shared by every subscriber.
    cache: dict[object, Any] = field(default_factory=dict, compare=False, repr=False)


#: Where a keyword first matched a paper: field index (TEXT_FIELDS), position, text found.
_Hit = tuple[int, int, str]


class _TopicMatches(Mapping[str, Mapping[str, Match]]):
    """Matches by topic; a personal topic's are assembled from its keywords when asked.

    Every subscriber with personal keywords has a topic of their own, so there can be as
    many as subscribers; matching each against every paper would cost a regex pass per
    subscriber. Instead each distinct keyword is matched once (``by_keyword``).
    """

    def __init__(
        self,
        fixed: dict[str, dict[str, Match]],
        personal: dict[str, Topic],
        by_keyword: dict[str, dict[str, _Hit]],
    ) -> None:
        self.fixed = fixed
        self.personal = personal
        self.by_keyword = by_keyword

    def __getitem__(self, name: str) -> Mapping[str, Match]:
        found = self.fixed.get(name)
        if found is not None:
            return found
        topic = self.personal[name]
        best: dict[str, tuple[tuple[int, int, int], str]] = {}
        for term in _distinct(topic.keywords):
            for pid, (fi, start, text) in self.by_keyword[_norm(term)].items():
                rank = (fi, start, -len(term))
                held = best.get(pid)
                if held is None or rank < held[0]:
                    best[pid] = (rank, text)
        return {
            pid: Match(name, _canonical(text, topic.keywords), TEXT_FIELDS[rank[0]])
            for pid, (rank, text) in best.items()
        }

    def __iter__(self) -> Iterator[str]:
        yield from self.fixed
        yield from self.personal

    def __len__(self) -> int:
        return len(self.fixed) + len(self.personal)

    def hit(self, term: str, pid: str) -> _Hit | None:
        return self.by_keyword[_norm(term)].get(pid)


def _distinct(terms: Iterable[str]) -> list[str]:
    return sorted({t.strip() for t in terms if t.strip()}, key=lambda t: (-len(t), t))


def _is_personal(topic: Topic) -> bool:
    return topic.name.startswith("~") and not (
        topic.exclude or topic.authors or topic.organizations or topic.categories
    )


def compile_terms(terms: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern for whole words and phrases (see the module docstring)."""
    return _Terms(terms).pattern


def _term_words(terms: Iterable[str]) -> list[list[str]]:
    """Each distinct term's words, longest term first (the pattern tries them in this order)."""
    ordered = sorted({t.strip() for t in terms if t.strip()}, key=len, reverse=True)
    return [[w for w in re.split(r"[\s-]+", term) if w] for term in ordered]


class _Terms:
    """``compile_terms``' pattern, and a faster way to search ASCII text with it.

    The pattern starts with a look-behind and ignores case, so the regex engine tries it at
    every character. For ASCII terms in ASCII text the same search runs on the lowercased
    text with a case-sensitive pattern that starts with a literal (which the engine skips
    to), checking the character before a match by hand. It finds the same leftmost match.
    """

    def __init__(self, terms: Iterable[str]) -> None:
        words = _term_words(terms)
        self.pattern: re.Pattern[str] | None = None
        self.lowered: re.Pattern[str] | None = None
        #: Per term, the tokens a text must hold for it to match (``_Postings``); None: any text.
        self.needs: list[frozenset[str]] | None = None
        if not words:
            return
        parts = [r"[\s-]+".join(re.escape(w) for w in ws) for ws in words]
        self.pattern = re.compile(
            r"(?<![^\W_])(?:" + "|".join(parts) + r")(?![^\W_])", re.IGNORECASE
        )
        if all(w.isascii() for ws in words for w in ws):
            lowered = [r"[\s-]+".join(re.escape(w.lower()) for w in ws) for ws in words]
            self.lowered = re.compile(r"(?:" + "|".join(lowered) + r")(?![^\W_])")
            needs = [frozenset(t for w in ws for t in _TOKEN.findall(w.lower())) for ws in words]
            if all(needs):  # a term of punctuation only ("++") can match without any token
                self.needs = needs

    def search(self, text: str, lowered: str | None) -> tuple[int, str] | None:
        """(start, text found) of the leftmost match; ``lowered``: text.lower() if ASCII."""
        if self.pattern is None:
            return None
        if self.lowered is None or lowered is None:
            m = self.pattern.search(text)
            return (m.start(), m.group(0)) if m else None
        pos = 0
        # Bounded: a term of hyphens only matches the empty string, also at the very end,
        # where searching from one past the end would find that same match again, forever.
        while pos <= len(lowered) and (m := self.lowered.search(lowered, pos)) is not None:
            start = m.start()
            if start == 0 or not lowered[start - 1].isalnum():  # the look-behind, for ASCII
                return start, text[start : m.end()]
            pos = start + 1
        return None


def _norm(term: str) -> str:
    return " ".join(re.split(r"[\s-]+", term.casefold().strip()))


def _canonical(found: str, terms: Sequence[str]) -> str:
    """The term as the operator wrote it, for the reason line."""
    norm = _norm(found)
    return next((t for t in terms if _norm(t) == norm), found)


# -- personal keywords and excludes become topics of their own --------------------------


def personal_topic_name(subscriber: Subscriber) -> str | None:
    return _list_name("keywords", subscriber.keywords) if subscriber.keywords else None


def personal_exclude_name(subscriber: Subscriber) -> str | None:
    return _list_name("exclude", subscriber.exclude) if subscriber.exclude else None


@functools.lru_cache(maxsize=8192)  # asked for on every select; lists repeat
def _list_name(kind: str, terms: tuple[str, ...]) -> str:
    digest = hashlib.sha1("\0".join(sorted(map(_norm, terms))).encode()).hexdigest()
    return f"~{kind}:{digest[:16]}"


def topics_for_run(
    topics: Mapping[str, Topic], subscribers: Iterable[Subscriber]
) -> dict[str, Topic]:
    """The operator's topics plus one per distinct personal keyword or exclude list."""
    out = dict(topics)
    for sub in subscribers:
        name = personal_topic_name(sub)
        if name and name not in out:
            out[name] = Topic(name=name, keywords=sub.keywords)
        name = personal_exclude_name(sub)
        if name and name not in out:
            # Matching an exclude list tells which papers it vetoes.
            out[name] = Topic(name=name, keywords=sub.exclude)
    return out


# -- matching, once per run --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Text:
    fields: dict[str, str]  # TEXT_FIELDS -> text
    lowered: dict[str, str | None]  # text.lower() where it is ASCII, for _Terms.search


def _texts(paper: PaperData) -> _Text:
    fields = {
        "title": paper.title,
        "ai_keywords": " · ".join(paper.ai_keywords),
        "abstract": paper.abstract,
    }
    return _Text(fields, {k: v.lower() if v.isascii() else None for k, v in fields.items()})


# A term's words, where they match, are bounded by characters that are not letters or digits
# (or the text's ends), so each run of letters and digits in an ASCII term is, lowercased, a
# whole run ("token") of the text. A text without all of a term's tokens cannot match it, and
# most papers lack most terms: ``_Postings`` says which papers to search at all.
_TOKEN = re.compile(r"[^\W_]+")  # what the pattern's look-arounds count as a letter or digit
#: The only non-ASCII characters that re.IGNORECASE matches with an ASCII letter or digit
#: ('İ' and 'ı' with i, LONG S with s, KELVIN SIGN with k; a test tries every code point).
_IGNORECASE_ASCII = {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"}
# Not str.lower(): 'İ'.lower() is two characters, the second not a letter.
_FOLD = str.maketrans({**{c: c.lower() for c in string.ascii_uppercase}, **_IGNORECASE_ASCII})
_SPACE_OUT = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})


def _tokens(text: str, lowered: str | None) -> list[str]:
    """The text's runs of letters and digits, lowercased as an ASCII term's match would be."""
    if lowered is not None:  # ASCII: the same runs as _TOKEN finds, faster
        return lowered.translate(_SPACE_OUT).split()
    return _TOKEN.findall(text.translate(_FOLD))


class _Postings:
    """Per text field, the papers holding each token that some term needs."""

    def __init__(self, texts: Mapping[str, _Text], wanted: set[str]) -> None:
        self.by_field: list[dict[str, set[str]]] = [{} for _ in TEXT_FIELDS]
        if not wanted:
            return  # no term can be looked up by its tokens: no need to read the texts
        for index, fname in zip(self.by_field, TEXT_FIELDS, strict=True):
            for pid, text in texts.items():
                for token in wanted.intersection(_tokens(text.fields[fname], text.lowered[fname])):
                    index.setdefault(token, set()).add(pid)

    def candidates(self, terms: _Terms) -> list[set[str]] | None:
        """Per field, the papers where ``terms`` may match (a superset); None: any paper."""
        if terms.needs is None:
            return None
        out: list[set[str]] = []
        for index in self.by_field:
            found: set[str] = set()
            for need in terms.needs:
                postings = sorted((index.get(t, set()) for t in need), key=len)
                found |= postings[0].intersection(*postings[1:])
            out.append(found)
        return out


def _wanted(terms: Iterable[_Terms]) -> set[str]:
    return {t for ts in terms if ts.needs for need in ts.needs for t in need}


def match_topics(
    papers: Iterable[PaperData],
    topics: Mapping[str, Topic],
    *,
    trends: Mapping[str, Trend] | None = None,
) -> Matches:
    """Every topic against every paper, once per run (how: the module docstring)."""
    return _match_topics(papers, topics, trends, prefilter=True)


def _match_topics_reference(
    papers: Iterable[PaperData],
    topics: Mapping[str, Topic],
    *,
    trends: Mapping[str, Trend] | None = None,
) -> Matches:
    """``match_topics`` searching every paper with every pattern: what the tests compare with."""
    return _match_topics(papers, topics, trends, prefilter=False)


def _match_topics(
    papers: Iterable[PaperData],
    topics: Mapping[str, Topic],
    trends: Mapping[str, Trend] | None,
    *,
    prefilter: bool,
) -> Matches:
    by_id = {p.id: p for p in papers}
    texts = {pid: _texts(p) for pid, p in by_id.items()}
    fixed_terms: dict[str, tuple[Topic, _Terms, _Terms]] = {}
    personal: dict[str, Topic] = {}
    keywords: dict[str, _Terms] = {}  # normalised -> the first spelling's pattern
    for name, topic in topics.items():
        if _is_personal(topic):
            personal[name] = topic
        else:
            fixed_terms[name] = (topic, _Terms(topic.keywords), _Terms(topic.exclude))
    for topic in personal.values():
        for term in _distinct(topic.keywords):
            key = _norm(term)
            if key not in keywords:
                keywords[key] = _Terms([term])
    postings = None
    if prefilter:
        every = [
            *keywords.values(),
            *(t for _, inc, exc in fixed_terms.values() for t in (inc, exc)),
        ]
        postings = _Postings(texts, _wanted(every))
    fixed = {
        name: _match_topic(topic, include, exclude, by_id, texts, postings)
        for name, (topic, include, exclude) in fixed_terms.items()
    }
    by_keyword = {key: _match_keyword(terms, texts, postings) for key, terms in keywords.items()}
    by_topic = _TopicMatches(fixed, personal, by_keyword)
    names = {name: t.display_name for name, t in topics.items() if t.display_name}
    return Matches(papers=by_id, by_topic=by_topic, trends=dict(trends or {}), names=names)


def _match_keyword(
    terms: _Terms, texts: Mapping[str, _Text], postings: _Postings | None
) -> dict[str, _Hit]:
    may = postings.candidates(terms) if postings else None
    pids: Iterable[str] = texts if may is None else _in_order(texts, may)
    found: dict[str, _Hit] = {}
    for pid in pids:
        text = texts[pid]
        for fi, fname in enumerate(TEXT_FIELDS):
            if may is not None and pid not in may[fi]:
                continue
            m = terms.search(text.fields[fname], text.lowered[fname])
            if m:
                found[pid] = (fi, m[0], m[1])
                break
    return found


def _in_order(papers: Iterable[str], may: list[set[str]]) -> list[str]:
    """The papers that may match in some field, in their order (the results' order)."""
    anywhere = set().union(*may)
    return [pid for pid in papers if pid in anywhere]


def _match_topic(
    topic: Topic,
    include: _Terms,
    exclude: _Terms,
    papers: Mapping[str, PaperData],
    texts: Mapping[str, _Text],
    postings: _Postings | None,
) -> dict[str, Match]:
    authors = compile_terms(topic.authors)
    orgs = compile_terms(topic.organizations)
    categories = {c.casefold() for c in topic.categories}
    may_include = postings.candidates(include) if postings else None
    may_exclude = postings.candidates(exclude) if postings else None
    pids: Iterable[str] = papers
    if may_include is not None and authors is None and orgs is None and not categories:
        pids = _in_order(papers, may_include)  # only a keyword can make a match
    canonical: dict[str, str] = {}  # text found -> keyword; the same few texts recur
    found: dict[str, Match] = {}
    for pid in pids:
        paper = papers[pid]
        text = texts[pid]
        if exclude.pattern is not None and any(
            exclude.search(text.fields[f], text.lowered[f])
            for fi, f in enumerate(TEXT_FIELDS)
            if may_exclude is None or pid in may_exclude[fi]
        ):
            continue
        candidates: list[Match] = []
        if include.pattern is not None:
            for fi, fname in enumerate(TEXT_FIELDS):
                if may_include is not None and pid not in may_include[fi]:
                    continue
                found_at = include.search(text.fields[fname], text.lowered[fname])
                if found_at:
                    keyword = canonical.get(found_at[1]) or canonical.setdefault(
                        found_at[1], _canonical(found_at[1], topic.keywords)
                    )
                    candidates.append(Match(topic.name, keyword, fname))
                    break
        if authors is not None:
            for author in paper.authors:
                m = authors.search(author)
                if m:
                    candidates.append(Match(topic.name, author, "authors"))
                    break
        if orgs is not None and paper.organization:
            m = orgs.search(paper.organization)
            if m:
                candidates.append(Match(topic.name, paper.organization, "organization"))
        if categories:
            hit = next((c for c in paper.categories if c.casefold() in categories), None)
            if hit:
                candidates.append(Match(topic.name, hit, "categories"))
        if candidates:
            found[pid] = max(candidates, key=lambda m: STRENGTH[m.field])
    return found


# -- per subscriber ----------------------------------------------------------------------


def window_start(
    subscriber: Subscriber, day: dt.date, last_digest_day: dt.date | None, max_age_days: int
) -> dt.date:
    """The first daily list a subscriber's digest for ``day`` draws from.

    Weekly: the last 7 days. Daily: from the day of their last digest (papers added to that
    list after it went out are not lost; delivered ones never repeat), at most
    ``max_age_days`` back; a first digest covers ``max_age_days``.
    """
    if subscriber.cadence == "weekly":
        return day - dt.timedelta(days=6)
    oldest = day - dt.timedelta(days=max(1, max_age_days) - 1)
    if last_digest_day is None:
        return oldest
    return max(min(last_digest_day, day), oldest)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def is_due(subscriber: Subscriber, day: dt.date, weekly_on: str) -> bool:
    """Daily subscribers are due every day, weekly ones on ``weekly_on``."""
    return subscriber.cadence == "daily" or WEEKDAYS[day.weekday()] == weekly_on


def score(
    paper: PaperData, match: Match, trend: Trend | None, now: dt.datetime, weights: Weights
) -> float:
    return _score(paper, match.field, trend, now, weights)


def _score(
    paper: PaperData, field: str, trend: Trend | None, now: dt.datetime, weights: Weights
) -> float:
    velocity = trend.per_day if trend else 0.0
    base = (
        weights.upvotes * math.log1p(max(0, paper.upvotes))
        + weights.velocity * math.log1p(velocity)
        + weights.match * STRENGTH[field]
    )
    listed = dt.datetime.combine(paper.day, dt.time(12), tzinfo=dt.UTC)
    age_days = max(0.0, (now - listed).total_seconds() / 86400)
    if weights.half_life_days > 0:
        base *= 0.5 ** (age_days / weights.half_life_days)
    return base


def select(
    matches: Matches,
    subscriber: Subscriber,
    sent_ids: frozenset[str],
    now: dt.datetime,
    *,
    day: dt.date | None = None,
    since: dt.date | None = None,
    skipped: frozenset[str] = frozenset(),
    weights: Weights = Weights(),
    trending_count: int = 3,
) -> Digest:
    """One subscriber's digest for ``day`` (default ``now``'s date).

    Candidates are the papers matched by the subscriber's topics (and own keywords), listed
    between ``since`` and ``day``, never sent to them before, not vetoed by their excludes.
    Papers under ``min_upvotes`` are left out and reported in ``Digest.skipped_ids``; one
    of those (``skipped``) that has since risen past the threshold comes back as "Rising",
    even from a list before ``since``.
    """
    day = day or now.date()
    personal = personal_topic_name(subscriber)
    if isinstance(matches.by_topic, _TopicMatches) and weights.match >= 0:
        top, low = _merge_ranked(matches, subscriber, sent_ids, now, day, since, skipped, weights)
    else:
        top, low = _scan(matches, subscriber, sent_ids, now, day, since, skipped, weights)

    picks: list[Pick] = []
    for rank, (value, pid, match) in enumerate(top):
        paper = matches.papers[pid]
        rising = pid in skipped and subscriber.min_upvotes > 0
        section = ""
        if subscriber.sections:
            if rising:
                section = RISING_SECTION
            elif rank < trending_count:
                section = TRENDING_SECTION
            else:
                section = (
                    PERSONAL_SECTION
                    if match.topic == personal
                    else matches.names.get(match.topic, match.topic)
                )
        picks.append(
            Pick(
                paper=paper,
                topic=match.topic if match.topic != personal else PERSONAL_SECTION,
                keyword=match.keyword,
                field=match.field,
                reason=reason(paper, match, matches.trends.get(pid), rising=rising),
                score=value,
                section=section,
                rising=rising,
            )
        )
    if subscriber.sections:
        picks = _in_section_order(picks, [matches.names.get(t, t) for t in subscriber.topics])
    return Digest(
        subscriber=subscriber, day=day, picks=tuple(picks), skipped_ids=tuple(sorted(low))
    )


_Ranked = list[tuple[float, str, Match]]  # (score, paper id, match), best first


def _scan(
    matches: Matches,
    subscriber: Subscriber,
    sent_ids: frozenset[str],
    now: dt.datetime,
    day: dt.date,
    since: dt.date | None,
    skipped: frozenset[str],
    weights: Weights,
) -> tuple[_Ranked, list[str]]:
    """Every match of every topic of the subscriber, scored and sorted: the plain way."""
    vetoed = matches.by_topic.get(personal_exclude_name(subscriber) or "", {})
    topic_names = list(subscriber.topics)
    personal = personal_topic_name(subscriber)
    if personal:
        topic_names.append(personal)

    best: dict[str, Match] = {}
    for name in topic_names:
        for pid, match in matches.by_topic.get(name, {}).items():
            if pid in sent_ids or pid in vetoed:
                continue
            paper_day = matches.papers[pid].day
            if paper_day > day or (since is not None and paper_day < since and pid not in skipped):
                continue
            held = best.get(pid)
            if held is None or STRENGTH[match.field] > STRENGTH[held.field]:
                best[pid] = match

    eligible: list[tuple[float, str]] = []
    low: list[str] = []
    for pid, match in best.items():
        paper = matches.papers[pid]
        if paper.upvotes < subscriber.min_upvotes:
            low.append(pid)
            continue
        if (
            since is not None
            and paper.day < since
            and pid in skipped
            and subscriber.min_upvotes == 0
        ):
            continue  # only a threshold makes a paper "rise"
        eligible.append((score(paper, match, matches.trends.get(pid), now, weights), pid))
    eligible.sort(key=lambda sp: (-sp[0], sp[1]))
    top = [(value, pid, best[pid]) for value, pid in eligible[: subscriber.max_papers]]
    return top, low


def _merge_ranked(
    matches: Matches,
    subscriber: Subscriber,
    sent_ids: frozenset[str],
    now: dt.datetime,
    day: dt.date,
    since: dt.date | None,
    skipped: frozenset[str],
    weights: Weights,
) -> tuple[_Ranked, list[str]]:
    """What ``_scan`` returns, from lists ranked once per run: merged, best first, until full.

    A paper's score only grows with the strength of its match (``weights.match >= 0``),
    so the first time the merge meets a paper is at the score ``_scan`` gives it, with the
    match of the first topic in the subscriber's order, as ``_scan`` keeps. The cost per
    subscriber is the papers looked at until the digest is full, not every match.
    """
    index = matches.by_topic
    if not isinstance(index, _TopicMatches):
        raise TypeError("matches were not made by match_topics")
    papers = matches.papers
    streams: list[Iterable[tuple[float, str, Match | None]]] = [
        _ranked_topic(matches, name, now, weights) for name in subscriber.topics
    ]
    personal = personal_topic_name(subscriber)
    terms: list[str] = []
    if personal in index.personal:
        terms = _distinct(index.personal[personal].keywords)
        streams.extend(_ranked_keyword(matches, term, now, weights) for term in terms)
    elif personal is not None and personal in index.fixed:
        streams.append(_ranked_topic(matches, personal, now, weights))
    exclude = personal_exclude_name(subscriber) or ""
    vetoes = _distinct(index.personal[exclude].keywords) if exclude in index.personal else []
    vetoed: Mapping[str, Match] = index.fixed.get(exclude, {})
    veto_hits = [index.by_keyword[_norm(t)] for t in vetoes]
    window = _window(matches, day, since)

    def admissible(pid: str) -> bool:
        # Listed between since and day, or a skipped paper (it may rise) listed by day.
        if pid not in window and not (pid in skipped and papers[pid].day <= day):
            return False
        if pid in sent_ids or pid in vetoed:
            return False
        return not veto_hits or not any(pid in hits for hits in veto_hits)

    minimum = subscriber.min_upvotes
    top: _Ranked = []
    seen: set[str] = set()
    if subscriber.max_papers > 0:
        for neg, pid, match in heapq.merge(*streams, key=_rank_key):
            if pid in seen:
                continue
            seen.add(pid)
            if not admissible(pid):
                continue
            paper = papers[pid]
            if paper.upvotes < minimum:
                continue  # reported in ``low`` below
            if since is not None and paper.day < since and pid in skipped and minimum == 0:
                continue  # only a threshold makes a paper "rise"
            if match is None:  # from a personal keyword: which one, as the topic's pattern finds
                match = _personal_match(index, personal or "", terms, pid)
            top.append((-neg, pid, match))
            if len(top) >= subscriber.max_papers:
                break
    low: list[str] = []
    if minimum > 0:  # every match under the threshold, from lists sorted by upvotes
        candidates: set[str] = set()
        sources = [("topic", name) for name in subscriber.topics if name in index.fixed]
        sources += [("keyword", _norm(term)) for term in terms]
        for source in sources:
            candidates.update(_below(matches, source, minimum))
        low = [pid for pid in candidates if admissible(pid)]
    return top, low


def _window(matches: Matches, day: dt.date, since: dt.date | None) -> frozenset[str]:
    """The papers listed between ``since`` and ``day``; once per run and window."""
    key = ("window", day, since)
    found: frozenset[str] | None = matches.cache.get(key)
    if found is None:
        found = matches.cache[key] = frozenset(
            pid
            for pid, p in matches.papers.items()
            if p.day <= day and (since is None or p.day >= since)
        )
    return found


def _below(matches: Matches, source: tuple[str, str], minimum: int) -> list[str]:
    """The ids of a topic's or personal keyword's matches with fewer upvotes than ``minimum``."""
    key = ("below", *source, minimum)
    found: list[str] | None = matches.cache.get(key)
    if found is None:
        by_votes = _by_upvotes(matches, source)
        end = bisect.bisect_left(by_votes, (minimum, ""))
        found = matches.cache[key] = [pid for _, pid in by_votes[:end]]
    return found


def _by_upvotes(matches: Matches, source: tuple[str, str]) -> list[tuple[int, str]]:
    """A topic's or personal keyword's matches as (upvotes, paper id), fewest first."""
    key = ("upvotes", *source)
    found = matches.cache.get(key)
    if found is None:
        index = matches.by_topic
        if not isinstance(index, _TopicMatches):
            raise TypeError("matches were not made by match_topics")
        kind, name = source
        pids = index.fixed[name] if kind == "topic" else index.by_keyword[name]
        found = matches.cache[key] = sorted((matches.papers[pid].upvotes, pid) for pid in pids)
    return found


def _rank_key(item: tuple[float, str, Match | None]) -> tuple[float, str]:
    return item[0], item[1]


def _personal_match(index: _TopicMatches, name: str, terms: list[str], pid: str) -> Match:
    found = min(
        ((hit[0], hit[1], -len(t)), hit[2]) for t in terms if (hit := index.hit(t, pid)) is not None
    )
    rank, text = found
    return Match(name, _canonical(text, index.personal[name].keywords), TEXT_FIELDS[rank[0]])


def _ranked_topic(
    matches: Matches, name: str, now: dt.datetime, weights: Weights
) -> list[tuple[float, str, Match | None]]:
    """A topic's matches as (-score, paper id, match), best first; once per run and topic."""
    key = ("topic", name, now, weights)
    ranked = matches.cache.get(key)
    if ranked is None:
        ranked = sorted(
            (-score(matches.papers[pid], m, matches.trends.get(pid), now, weights), pid, m)
            for pid, m in matches.by_topic.get(name, {}).items()
        )
        matches.cache[key] = ranked
    return ranked


def _ranked_keyword(
    matches: Matches, term: str, now: dt.datetime, weights: Weights
) -> list[tuple[float, str, Match | None]]:
    """A personal keyword's hits as (-score, paper id, None), best first; once per run."""
    index = matches.by_topic
    if not isinstance(index, _TopicMatches):
        raise TypeError("matches were not made by match_topics")
    key = ("keyword", _norm(term), now, weights)
    ranked = matches.cache.get(key)
    if ranked is None:
        ranked = sorted(
            (
                -_score(
                    matches.papers[pid], TEXT_FIELDS[fi], matches.trends.get(pid), now, weights
                ),
                pid,
                None,
            )
            for pid, (fi, _, _) in index.by_keyword[_norm(term)].items()
        )
        matches.cache[key] = ranked
    return ranked


def _in_section_order(picks: list[Pick], headings: Sequence[str]) -> list[Pick]:
    """Trending, Rising, then the subscriber's topics (``headings``: theirs, in order)."""
    order = {TRENDING_SECTION: -2, RISING_SECTION: -1, **{t: i for i, t in enumerate(headings)}}
    return sorted(picks, key=lambda p: order.get(p.section, len(order)))  # stable: rank within


def reason(paper: PaperData, match: Match, trend: Trend | None, *, rising: bool = False) -> str:
    """A short line the templates show, e.g. ``matched "diffusion" in title · 154 upvotes, +40 since yesterday``."""
    if match.field == "authors":
        what = f'by "{match.keyword}"'
    elif match.field == "organization":
        what = f'from "{match.keyword}"'
    elif match.field == "categories":
        what = f"in {match.keyword}"
    else:
        where = "AI keywords" if match.field == "ai_keywords" else match.field
        what = f'matched "{match.keyword}" in {where}'
    votes = f"{paper.upvotes} upvote{'' if paper.upvotes == 1 else 's'}"
    moved = trend.describe() if trend else ""
    text = f"{what} · {votes}" + (f", {moved}" if moved else "")
    return f"Rising: {text}" if rising else text
