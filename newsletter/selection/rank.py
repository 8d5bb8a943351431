"""Matches -> one subscriber's digest: window, score, sections and reasons. Pure.

``select(matches, subscriber, sent_ids, now)`` builds one digest by set look-ups on lists
ranked once per run and shared by every subscriber, so the cost per subscriber is the
papers looked at until the digest is full (``reference=True``: score every match of the
subscriber's topics and sort, the plain way the tests compare with). ``Selecting`` holds
what ``select`` needs once per run and ``Request`` one subscriber's share of it: what the
pipeline hands to compose's pool, whose workers select too.

    score = (w.upvotes * ln(1 + upvotes) + w.velocity * ln(1 + upvotes gained per day)
             + w.match * strength) * 0.5 ** (age in days / w.half_life_days)

where strength is 1.0 for a match in the title or an author, 0.8 organization, 0.6 AI
keywords, 0.4 abstract, 0.3 category. Ties go to the lower paper id.
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from newsletter.models import (
    PERSONAL_SECTION,
    RISING_SECTION,
    TRENDING_SECTION,
    WEEKDAYS,
    Digest,
    PaperData,
    Pick,
    Subscriber,
    Trend,
    Weights,
)
from newsletter.selection.match import (
    STRENGTH,
    TEXT_FIELDS,
    Match,
    Matches,
    TopicMatches,
    canonical_term,
    distinct_terms,
    norm_term,
    personal_exclude_name,
    personal_topic_name,
)


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
    reference: bool = False,
) -> Digest:
    """One subscriber's digest for ``day`` (default ``now``'s date).

    Candidates are the papers matched by the subscriber's topics (and own keywords), listed
    between ``since`` and ``day``, never sent to them before, not vetoed by their excludes.
    Papers under ``min_upvotes`` are left out and reported in ``Digest.skipped_ids``; one
    of those (``skipped``) that has since risen past the threshold comes back as "Rising",
    even from a list before ``since``. ``reference``: the plain scan (the module docstring);
    the same digest.
    """
    day = day or now.date()
    personal = personal_topic_name(subscriber)
    fast = isinstance(matches.by_topic, TopicMatches) and weights.match >= 0
    if fast and not reference:
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


@dataclass(frozen=True, slots=True)
class Selecting:
    """What ``select`` needs once per run: made by the pipeline after matching, read by
    compose's pool (a worker gets it once, at start, and selects for its requests)."""

    matches: Matches
    now: dt.datetime
    day: dt.date
    weights: Weights = field(default_factory=Weights)
    trending_count: int = 3
    send_empty: bool = False  # compose a digest without papers (else: ``NothingNew``)

    def select(
        self,
        subscriber: Subscriber,
        since: dt.date | None,
        sent_ids: frozenset[str],
        skipped: frozenset[str],
    ) -> Digest:
        return select(
            self.matches,
            subscriber,
            sent_ids,
            self.now,
            day=self.day,
            since=since,
            skipped=skipped,
            weights=self.weights,
            trending_count=self.trending_count,
        )

    def wanted(self, digest: Digest) -> bool:
        return bool(digest.picks) or self.send_empty


@dataclass(frozen=True, slots=True)
class Request:
    """One subscriber's share of ``select``'s arguments: made by the pipeline from the
    store (window start, sent-history, skipped papers), read by ``Selecting.select``."""

    subscriber: Subscriber
    since: dt.date | None = None
    sent_ids: frozenset[str] = frozenset()
    skipped: frozenset[str] = frozenset()


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
    if not isinstance(index, TopicMatches):
        raise TypeError("matches were not made by match_topics")
    papers = matches.papers
    streams: list[Iterable[tuple[float, str, Match | None]]] = [
        _ranked_topic(matches, name, now, weights) for name in subscriber.topics
    ]
    personal = personal_topic_name(subscriber)
    terms: list[str] = []
    if personal in index.personal:
        terms = distinct_terms(index.personal[personal].keywords)
        streams.extend(_ranked_keyword(matches, term, now, weights) for term in terms)
    elif personal is not None and personal in index.fixed:
        streams.append(_ranked_topic(matches, personal, now, weights))
    exclude = personal_exclude_name(subscriber) or ""
    vetoes = distinct_terms(index.personal[exclude].keywords) if exclude in index.personal else []
    vetoed: Mapping[str, Match] = index.fixed.get(exclude, {})
    veto_hits = [index.by_keyword[norm_term(t)] for t in vetoes]
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
        sources += [("keyword", norm_term(term)) for term in terms]
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
        if not isinstance(index, TopicMatches):
            raise TypeError("matches were not made by match_topics")
        kind, name = source
        pids = index.fixed[name] if kind == "topic" else index.by_keyword[name]
        found = matches.cache[key] = sorted((matches.papers[pid].upvotes, pid) for pid in pids)
    return found


def _rank_key(item: tuple[float, str, Match | None]) -> tuple[float, str]:
    return item[0], item[1]


def _personal_match(index: TopicMatches, name: str, terms: list[str], pid: str) -> Match:
    found = min(
        ((hit[0], hit[1], -len(t)), hit[2]) for t in terms if (hit := index.hit(t, pid)) is not None
    )
    rank, text = found
    return Match(name, canonical_term(text, index.personal[name].keywords), TEXT_FIELDS[rank[0]])


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
    if not isinstance(index, TopicMatches):
        raise TypeError("matches were not made by match_topics")
    key = ("keyword", norm_term(term), now, weights)
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
            for pid, (fi, _, _) in index.by_keyword[norm_term(term)].items()
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
