"""Which papers each subscriber gets. Pure: no clock, disk or network in here.

``match_topics(papers, topics)`` runs once per run: each topic's keywords are compiled into
one pattern and matched against every paper once (a subscriber's own keywords and excludes
become topics of their own, shared by everyone with the same list). ``select(matches,
subscriber, sent_ids, now)`` then builds one digest by set look-ups, so the cost per
subscriber does not grow with the number of keywords or papers matched by nobody.

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

import datetime as dt
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from newsletter.models import Digest, PaperData, Pick, Subscriber, Topic

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
class Trend:
    """Upvotes gained between two snapshots of a paper taken ``hours`` apart."""

    delta: int
    hours: float

    @property
    def per_day(self) -> float:
        return max(0.0, self.delta * 24.0 / self.hours) if self.hours > 0 else 0.0

    def describe(self) -> str:
        if self.delta <= 0:
            return ""
        when = "since yesterday" if 12 <= self.hours <= 36 else f"in {_span(self.hours)}"
        return f"+{self.delta} {when}"


def _span(hours: float) -> str:
    if hours < 36:
        return f"{round(hours)} h"
    return f"{round(hours / 24)} days"


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


def compile_terms(terms: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern for whole words and phrases (see the module docstring)."""
    parts = []
    for term in sorted({t.strip() for t in terms if t.strip()}, key=len, reverse=True):
        words = [w for w in re.split(r"[\s-]+", term) if w]
        parts.append(r"[\s-]+".join(re.escape(w) for w in words))
    if not parts:
        return None
    return re.compile(r"(?<![^\W_])(?:" + "|".join(parts) + r")(?![^\W_])", re.IGNORECASE)


def _norm(term: str) -> str:
    return " ".join(re.split(r"[\s-]+", term.casefold().strip()))


def _canonical(found: str, terms: Sequence[str]) -> str:
    """The term as the operator wrote it, for the reason line."""
    norm = _norm(found)
    return next((t for t in terms if _norm(t) == norm), found)


# -- personal keywords and excludes become topics of their own --------------------------


def personal_topic_name(subscriber: Subscriber) -> str | None:
    if not subscriber.keywords:
        return None
    digest = hashlib.sha1("\0".join(sorted(map(_norm, subscriber.keywords))).encode()).hexdigest()
    return f"~keywords:{digest[:16]}"


def personal_exclude_name(subscriber: Subscriber) -> str | None:
    if not subscriber.exclude:
        return None
    digest = hashlib.sha1("\0".join(sorted(map(_norm, subscriber.exclude))).encode()).hexdigest()
    return f"~exclude:{digest[:16]}"


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


def _texts(paper: PaperData) -> dict[str, str]:
    return {
        "title": paper.title,
        "ai_keywords": " · ".join(paper.ai_keywords),
        "abstract": paper.abstract,
    }


def match_topics(
    papers: Iterable[PaperData],
    topics: Mapping[str, Topic],
    *,
    trends: Mapping[str, Trend] | None = None,
) -> Matches:
    by_id = {p.id: p for p in papers}
    texts = {pid: _texts(p) for pid, p in by_id.items()}
    by_topic: dict[str, dict[str, Match]] = {}
    for name, topic in topics.items():
        by_topic[name] = _match_topic(topic, by_id, texts)
    return Matches(papers=by_id, by_topic=by_topic, trends=dict(trends or {}))


def _match_topic(
    topic: Topic, papers: Mapping[str, PaperData], texts: Mapping[str, Mapping[str, str]]
) -> dict[str, Match]:
    include = compile_terms(topic.keywords)
    exclude = compile_terms(topic.exclude)
    authors = compile_terms(topic.authors)
    orgs = compile_terms(topic.organizations)
    categories = {c.casefold() for c in topic.categories}
    found: dict[str, Match] = {}
    for pid, paper in papers.items():
        fields = texts[pid]
        if exclude is not None and any(exclude.search(t) for t in fields.values()):
            continue
        candidates: list[Match] = []
        if include is not None:
            for fname in TEXT_FIELDS:
                m = include.search(fields[fname])
                if m:
                    candidates.append(
                        Match(topic.name, _canonical(m.group(0), topic.keywords), fname)
                    )
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
    velocity = trend.per_day if trend else 0.0
    base = (
        weights.upvotes * math.log1p(max(0, paper.upvotes))
        + weights.velocity * math.log1p(velocity)
        + weights.match * STRENGTH[match.field]
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

    picks: list[Pick] = []
    for rank, (value, pid) in enumerate(eligible[: subscriber.max_papers]):
        paper, match = matches.papers[pid], best[pid]
        rising = pid in skipped and subscriber.min_upvotes > 0
        section = ""
        if subscriber.sections:
            if rising:
                section = RISING_SECTION
            elif rank < trending_count:
                section = TRENDING_SECTION
            else:
                section = PERSONAL_SECTION if match.topic == personal else match.topic
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
        picks = _in_section_order(picks, subscriber.topics)
    return Digest(
        subscriber=subscriber, day=day, picks=tuple(picks), skipped_ids=tuple(sorted(low))
    )


def _in_section_order(picks: list[Pick], topics: Sequence[str]) -> list[Pick]:
    order = {TRENDING_SECTION: -2, RISING_SECTION: -1, **{t: i for i, t in enumerate(topics)}}
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
