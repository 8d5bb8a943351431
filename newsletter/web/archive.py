"""The public archive's data: every listed day, its papers by public topic, scored as the
digests scored them when that day ended.

    papers  = store.candidates([day]) with store.upvotes_at(ids, end of day)     (I/O)
    trends  = store.trends(ids, until=end of day)                                (I/O)
    day     = score_day(day, papers, trends, public topics, weights)             (pure)
    entries = topic_entries(days newest first, topic, limit)                     (pure)

``score_day`` reuses selection's matching and ranking with ``now`` = the end of the day
(UTC): a reader of the topic alone, with an unlimited digest and nothing sent before, gets
the day's papers in the digests' order, with their reason lines. No subscriber's data is
read. ``Archive`` reads the store and keeps each day it scored until that day's papers
change (``store.listed_days``), so a server rescores only the days a fetch touched.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from newsletter import selection
from newsletter.models import PaperData, Subscriber, Topic, Trend, Weights
from newsletter.store import Store

#: The reader a topic's page is selected for: no address of anyone real, nothing sent before.
_READER = "archive@archive.invalid"


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """A paper under one topic on one day's page: made by ``score_day``, read by the pages
    and the feeds. ``paper.upvotes`` is the count when the day ended; ``updated`` the time
    of the snapshot it comes from."""

    paper: PaperData
    topic: str
    reason: str
    score: float
    updated: dt.datetime


@dataclass(frozen=True, slots=True)
class ArchiveDay:
    """One listed day: its public topics in the config's order, each with its entries best
    first (a topic without papers that day is left out)."""

    day: dt.date
    topics: tuple[tuple[str, tuple[ArchiveEntry, ...]], ...]

    @property
    def paper_ids(self) -> list[str]:
        """The papers shown, each once, in the order of their first appearance."""
        return list(dict.fromkeys(e.paper.id for _, entries in self.topics for e in entries))


def end_of(day: dt.date) -> dt.datetime:
    """The end of a day (UTC): when its digests are scored for the archive."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)


def score_day(
    day: dt.date,
    papers: Sequence[PaperData],
    trends: Mapping[str, Trend],
    topics: Mapping[str, Topic],
    updated: Mapping[str, dt.datetime],
    weights: Weights = Weights(),
) -> ArchiveDay:
    """The day's papers by topic, as a digest of that topic alone scored them at the end of
    the day. ``papers`` carry their upvotes as of then; ``updated``: when each count was taken."""
    matches = selection.match_topics(papers, topics, trends=trends)
    now = end_of(day)
    grouped: list[tuple[str, tuple[ArchiveEntry, ...]]] = []
    for slug in topics:
        reader = Subscriber(email=_READER, topics=(slug,), max_papers=max(1, len(papers)))
        digest = selection.select(
            matches, reader, frozenset(), now, day=day, since=day, weights=weights
        )
        entries = tuple(
            ArchiveEntry(p.paper, slug, p.reason, p.score, updated.get(p.paper.id, now))
            for p in digest.picks
        )
        if entries:
            grouped.append((slug, entries))
    return ArchiveDay(day, tuple(grouped))


def topic_entries(
    days: Iterable[ArchiveDay], topic: str | None, limit: int
) -> list[list[ArchiveEntry]]:
    """The newest ``limit`` papers of a topic (None: of every public topic), from days given
    newest first, each paper once (on its newest day): one list per paper, an entry per topic
    it is in, in the day page's order."""
    found: dict[str, list[ArchiveEntry]] = {}
    for day in days:
        this_day: dict[str, list[ArchiveEntry]] = {}
        for slug, entries in day.topics:
            if topic is not None and slug != topic:
                continue
            for entry in entries:
                if entry.paper.id not in found:
                    this_day.setdefault(entry.paper.id, []).append(entry)
        for pid, group in this_day.items():
            if len(found) >= limit:
                return list(found.values())
            found[pid] = group
    return list(found.values())


#: A listed day as the store gives it: (day, papers listed, when one was last fetched).
Listed = tuple[dt.date, int, dt.datetime]


class Archive:
    """The archive of one store for one set of public topics. A day is scored once and kept
    until its papers change (``store.listed_days``): a fetch rescores the days it touched,
    not the whole archive. Safe to share between a server's threads."""

    def __init__(self, topics: Mapping[str, Topic], weights: Weights = Weights()) -> None:
        self.topics = dict(topics)
        self.weights = weights
        self._lock = threading.Lock()
        self._days: dict[dt.date, tuple[Listed, ArchiveDay]] = {}

    def day(self, store: Store, listed: Listed) -> ArchiveDay:
        with self._lock:
            held = self._days.get(listed[0])
        if held is not None and held[0] == listed:
            return held[1]
        found = self._score(store, listed[0])
        with self._lock:
            self._days[listed[0]] = (listed, found)
        return found

    def days(self, store: Store, listed: Iterable[Listed]) -> Iterator[ArchiveDay]:
        """The days, scored as needed (lazily: a feed stops reading when it is full)."""
        return (self.day(store, one) for one in listed)

    def forget(self, keep: Iterable[dt.date]) -> None:
        """Drop the days no longer listed (a purged state)."""
        kept = set(keep)
        with self._lock:
            for day in [d for d in self._days if d not in kept]:
                del self._days[day]

    def _score(self, store: Store, day: dt.date) -> ArchiveDay:
        until = end_of(day)
        listed = store.candidates([day])
        ids = [p.id for p in listed]
        counts = store.upvotes_at(ids, until)
        papers = [
            dataclasses.replace(p, upvotes=counts[p.id][0]) if p.id in counts else p for p in listed
        ]
        updated = {pid: at for pid, (_, at) in counts.items()}
        trends = store.trends(ids, until=until)
        return score_day(day, papers, trends, self.topics, updated, self.weights)
