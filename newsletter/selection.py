"""Which papers each subscriber gets. Pure: no clock, disk or network in here.

``match_topics(papers, topics)`` runs once per run: each topic's keywords are compiled into
one pattern and matched against every paper once. ``select(matches, subscriber, sent_ids,
now)`` then builds one subscriber's digest from those matches by set operations, so the cost
per subscriber does not grow with the number of keywords.

Keywords match whole words and phrases, case-insensitively, in the title, the abstract and
the AI keywords. "Whole word" means the keyword is not glued to a letter or digit on either
side: ``diffusion`` matches "Diffusion-based" and "(diffusion)" but not "diffusions";
list plural forms as their own keywords. Whitespace inside a phrase matches any run of
whitespace, and a hyphen in a keyword matches a hyphen or a space ("flow-matching" also
finds "flow matching").
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from newsletter.models import Digest, PaperData, Pick, Subscriber, Topic

FIELDS = ("title", "ai_keywords", "abstract")  # in order of strength


@dataclass(frozen=True, slots=True)
class Match:
    """Why one paper matched one topic: the keyword and the strongest field it was in."""

    topic: str
    keyword: str
    field: str


@dataclass(frozen=True, slots=True)
class Matches:
    """The result of matching every topic against every paper, once per run."""

    papers: Mapping[str, PaperData]
    by_topic: Mapping[str, Mapping[str, Match]]  # topic -> paper id -> match


def compile_terms(terms: Iterable[str]) -> re.Pattern[str] | None:
    parts = []
    for term in sorted({t.strip() for t in terms if t.strip()}, key=len, reverse=True):
        words = re.split(r"[\s-]+", term)
        parts.append(r"[\s-]+".join(re.escape(w) for w in words if w))
    if not parts:
        return None
    return re.compile(r"(?<![^\W_])(?:" + "|".join(parts) + r")(?![^\W_])", re.IGNORECASE)


def _fields(paper: PaperData) -> dict[str, str]:
    return {
        "title": paper.title,
        "ai_keywords": " · ".join(paper.ai_keywords),
        "abstract": paper.abstract,
    }


def match_topics(papers: Iterable[PaperData], topics: Mapping[str, Topic]) -> Matches:
    by_id = {p.id: p for p in papers}
    texts = {pid: _fields(p) for pid, p in by_id.items()}
    by_topic: dict[str, dict[str, Match]] = {}
    for name, topic in topics.items():
        include = compile_terms(topic.keywords)
        exclude = compile_terms(topic.exclude)
        found: dict[str, Match] = {}
        if include is not None:
            for pid, fields in texts.items():
                if exclude is not None and any(exclude.search(t) for t in fields.values()):
                    continue
                for field in FIELDS:
                    m = include.search(fields[field])
                    if m:
                        found[pid] = Match(name, _canonical(m.group(0), topic.keywords), field)
                        break
        by_topic[name] = found
    return Matches(papers=by_id, by_topic=by_topic)


def _canonical(found: str, keywords: Sequence[str]) -> str:
    """The keyword as the operator wrote it, for the reason line."""
    norm = " ".join(re.split(r"[\s-]+", found.casefold()))
    for kw in keywords:
        if " ".join(re.split(r"[\s-]+", kw.casefold().strip())) == norm:
            return kw
    return found


def select(
    matches: Matches,
    subscriber: Subscriber,
    sent_ids: frozenset[str],
    now: dt.datetime,
    *,
    day: dt.date | None = None,
) -> Digest:
    """One subscriber's digest: matching, unsent papers, ranked by upvotes, capped.

    ``day`` is the run's day (the daily list it is for); it defaults to ``now``'s date.
    """
    best: dict[str, Match] = {}
    for topic in subscriber.topics:
        for pid, match in matches.by_topic.get(topic, {}).items():
            if pid in sent_ids or pid in best:
                continue
            if matches.papers[pid].upvotes < subscriber.min_upvotes:
                continue
            best[pid] = match
    ranked = sorted(best, key=lambda pid: (-matches.papers[pid].upvotes, pid))
    picks = tuple(_pick(matches.papers[pid], best[pid]) for pid in ranked[: subscriber.max_papers])
    return Digest(subscriber=subscriber, day=day or now.date(), picks=picks)


def _pick(paper: PaperData, match: Match) -> Pick:
    field = "AI keywords" if match.field == "ai_keywords" else match.field
    votes = f"{paper.upvotes} upvote{'' if paper.upvotes == 1 else 's'}"
    return Pick(
        paper=paper,
        topic=match.topic,
        keyword=match.keyword,
        field=match.field,
        reason=f'matched "{match.keyword}" in {field} · {votes}',
    )
