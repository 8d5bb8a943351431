"""What both backends do alike with fetched days, raw responses and upvote snapshots: written
in SQLite's SQL through the backend's ``_exec`` (PostgreSQL's rewrites the placeholders), as
``SubscriberRows`` and ``LedgerRows`` are. Adding papers and reading them stay per backend
(PostgreSQL merges with ``= ANY`` and upserts in one ``executemany``)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

from newsletter.models import Response, Trend
from newsletter.store.subscribers import SubscriberRows

#: A trend compares the newest snapshot with one at least this much older, when there is one.
TREND_BASELINE = dt.timedelta(hours=12)


def _marks(values: Sequence[Any]) -> str:
    """``?, ?, ?``: one placeholder a value, for ``IN (...)`` on both backends."""
    return ", ".join("?" * len(values))


class PaperRows(SubscriberRows):
    """Fetched days, raw responses and upvote history, for ``SqliteStore`` and ``PostgresStore``."""

    def mark_fetched(
        self,
        source: str,
        day: dt.date,
        papers: int,
        now: dt.datetime,
        *,
        error: str | None = None,
    ) -> None:
        """Record a fetch of ``source`` for ``day``; with ``error``, a failed one to retry."""
        self._exec(
            "INSERT INTO fetched_days(source, day, fetched_at, papers, error) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, day) DO UPDATE SET "
            "fetched_at = excluded.fetched_at, papers = excluded.papers, error = excluded.error",
            (source, day.isoformat(), now.isoformat(), papers, error),
        )

    def failed_days(self, source: str, since: dt.date) -> list[dt.date]:
        """Days from ``since`` on whose last fetch from ``source`` failed: fetch them again."""
        rows = self._exec(
            "SELECT day FROM fetched_days WHERE source = ? AND day >= ? AND error IS NOT NULL "
            "ORDER BY day",
            (source, since.isoformat()),
        )
        return [dt.date.fromisoformat(r[0]) for r in rows]

    def complete_days(self, source: str, days: Iterable[dt.date]) -> set[dt.date]:
        """Days fetched after they ended (UTC): their list can no longer grow."""
        wanted = sorted({d.isoformat() for d in days})
        if not wanted:
            return set()
        rows = self._exec(
            f"SELECT day, fetched_at FROM fetched_days "
            f"WHERE source = ? AND day IN ({_marks(wanted)}) AND error IS NULL",
            (source, *wanted),
        )
        return {
            dt.date.fromisoformat(day)
            for day, fetched_at in rows
            if dt.datetime.fromisoformat(fetched_at).date() > dt.date.fromisoformat(day)
        }

    def save_response(self, response: Response, now: dt.datetime) -> None:
        """Keep the raw response: conditional GET revalidates it, --replay re-parses it."""
        self._exec(
            "INSERT INTO responses(url, status, headers, body, fetched_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (url) DO UPDATE SET "
            "status = excluded.status, headers = excluded.headers, body = excluded.body, "
            "fetched_at = excluded.fetched_at",
            (
                response.url,
                response.status,
                json.dumps(dict(response.headers)),
                response.body,
                now.isoformat(),
            ),
        )

    def load_response(self, url: str) -> Response | None:
        row = self._exec(
            "SELECT url, status, headers, body FROM responses WHERE url = ?", (url,)
        ).fetchone()
        if row is None:
            return None
        return Response(row[0], row[1], bytes(row[3]), json.loads(row[2]), from_store=True)

    def _snapshots(
        self, paper_ids: Iterable[str], until: dt.datetime | None
    ) -> dict[str, list[tuple[dt.datetime, int]]]:
        """Each paper's (taken at, upvotes) snapshots up to ``until`` (None: all), oldest first."""
        raise NotImplementedError

    def trends(
        self, paper_ids: Iterable[str], *, until: dt.datetime | None = None
    ) -> dict[str, Trend]:
        """Upvotes gained per paper between its newest snapshot and an older baseline;
        ``until``: from the snapshots taken up to then (the archive scores a past day)."""
        out: dict[str, Trend] = {}
        for pid, snaps in self._snapshots(paper_ids, until).items():
            if len(snaps) < 2:
                continue
            newest_at, newest = snaps[-1]
            older = [s for s in snaps[:-1] if newest_at - s[0] >= TREND_BASELINE] or snaps[:1]
            base_at, base = older[-1]
            hours = (newest_at - base_at).total_seconds() / 3600
            if hours > 0:
                out[pid] = Trend(delta=newest - base, hours=hours)
        return out

    def upvotes_at(
        self, paper_ids: Iterable[str], until: dt.datetime
    ) -> dict[str, tuple[int, dt.datetime]]:
        """Each paper's upvotes as of ``until`` and when that snapshot was taken: the newest
        one up to then, or the first one when every snapshot is later (a day fetched only
        after it ended)."""
        out: dict[str, tuple[int, dt.datetime]] = {}
        for pid, snaps in self._snapshots(paper_ids, None).items():
            before = [s for s in snaps if s[0] <= until]
            at, upvotes = before[-1] if before else snaps[0]
            out[pid] = (upvotes, at)
        return out

    def listed_days(self) -> list[tuple[dt.date, int, dt.datetime]]:
        """Every day with papers, newest first: (day, papers listed, when one of them was last
        fetched). What the archive keeps of a day is good until the last two change."""
        rows = self._exec(
            "SELECT d.day, COUNT(*), MAX(p.updated_at) FROM paper_days d "
            "JOIN papers p ON p.id = d.paper_id GROUP BY d.day ORDER BY d.day DESC"
        )
        return [
            (dt.date.fromisoformat(day), count, dt.datetime.fromisoformat(changed))
            for day, count, changed in rows
        ]
