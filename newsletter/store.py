"""The state: SQLite behind the ``Store`` protocol.

What it keeps: every paper seen with the daily lists (days) it appeared on, an upvote
snapshot per fetch (for trending), which days were fetched, and what was delivered to
whom. The schema is an ordered list of migrations; ``PRAGMA user_version`` counts how many
have run. Fetching (a preview too) writes papers and snapshots; only a real send writes
deliveries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from newsletter.errors import StoreError
from newsletter.models import PaperData, merge_papers
from newsletter.sources.http import Response

MIGRATIONS: Sequence[str] = (
    # 1: papers, the days they were listed, upvote snapshots, fetched days, deliveries.
    """
    CREATE TABLE papers (
        id          TEXT PRIMARY KEY,
        data        TEXT NOT NULL,          -- PaperData as JSON, newest fetch wins
        updated_at  TEXT NOT NULL
    );
    CREATE TABLE paper_days (
        paper_id    TEXT NOT NULL REFERENCES papers(id),
        day         TEXT NOT NULL,          -- YYYY-MM-DD, the daily list
        PRIMARY KEY (paper_id, day)
    );
    CREATE INDEX paper_days_day ON paper_days(day);
    CREATE TABLE snapshots (
        paper_id    TEXT NOT NULL REFERENCES papers(id),
        fetched_at  TEXT NOT NULL,
        upvotes     INTEGER NOT NULL,
        comments    INTEGER NOT NULL,
        PRIMARY KEY (paper_id, fetched_at)
    );
    CREATE TABLE fetched_days (
        source      TEXT NOT NULL,
        day         TEXT NOT NULL,
        fetched_at  TEXT NOT NULL,
        papers      INTEGER NOT NULL,
        PRIMARY KEY (source, day)
    );
    CREATE TABLE deliveries (
        subscriber  TEXT NOT NULL,          -- casefolded address
        paper_id    TEXT NOT NULL,
        digest_id   TEXT NOT NULL,
        delivered_at TEXT NOT NULL,
        PRIMARY KEY (subscriber, paper_id)
    );
    """,
    # 2: raw HTTP responses (conditional GET and --replay), failed fetches to retry.
    """
    CREATE TABLE responses (
        url           TEXT PRIMARY KEY,     -- the full request URL, query included
        status        INTEGER NOT NULL,
        headers       TEXT NOT NULL,        -- JSON object
        body          BLOB NOT NULL,
        fetched_at    TEXT NOT NULL
    );
    ALTER TABLE fetched_days ADD COLUMN error TEXT;  -- NULL: fetched; else why it failed
    """,
)


class Store(Protocol):
    def add_papers(self, papers: Iterable[PaperData], now: dt.datetime) -> int: ...

    def mark_fetched(
        self,
        source: str,
        day: dt.date,
        papers: int,
        now: dt.datetime,
        *,
        error: str | None = None,
    ) -> None: ...

    def failed_days(self, source: str, since: dt.date) -> list[dt.date]: ...

    def candidates(self, days: Iterable[dt.date]) -> list[PaperData]: ...

    def sent_ids(self, subscriber: str) -> frozenset[str]: ...

    def record_delivery(
        self, subscriber: str, paper_ids: Iterable[str], digest_id: str, now: dt.datetime
    ) -> None: ...


class SqliteStore:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise StoreError(self.path, f"cannot open the state database: {e}") from e
        except OSError as e:
            raise StoreError(self.path, f"cannot create the state database: {e}") from e

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                self.path,
                f"schema version {version} is newer than this program knows ({len(MIGRATIONS)})",
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits first; the BEGIN makes each migration all-or-nothing.
            self.db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def add_papers(self, papers: Iterable[PaperData], now: dt.datetime) -> int:
        stamp = now.isoformat()
        count = 0
        with self._tx():
            for p in papers:
                row = self.db.execute("SELECT data FROM papers WHERE id = ?", (p.id,)).fetchone()
                if row is not None:
                    # Hugging Face fields must survive a later arXiv-only fetch of the paper.
                    p = merge_papers(_load(row[0], p.day.isoformat()), p)
                self.db.execute(
                    "INSERT INTO papers(id, data, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                    (p.id, _dump(p), stamp),
                )
                self.db.execute(
                    "INSERT OR IGNORE INTO paper_days(paper_id, day) VALUES (?, ?)",
                    (p.id, p.day.isoformat()),
                )
                self.db.execute(
                    "INSERT OR REPLACE INTO snapshots(paper_id, fetched_at, upvotes, comments) "
                    "VALUES (?, ?, ?, ?)",
                    (p.id, stamp, p.upvotes, p.comments),
                )
                count += 1
        return count

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
        self.db.execute(
            "INSERT OR REPLACE INTO fetched_days(source, day, fetched_at, papers, error) "
            "VALUES (?, ?, ?, ?, ?)",
            (source, day.isoformat(), now.isoformat(), papers, error),
        )

    def failed_days(self, source: str, since: dt.date) -> list[dt.date]:
        """Days from ``since`` on whose last fetch from ``source`` failed: fetch them again."""
        rows = self.db.execute(
            "SELECT day FROM fetched_days WHERE source = ? AND day >= ? AND error IS NOT NULL "
            "ORDER BY day",
            (source, since.isoformat()),
        )
        return [dt.date.fromisoformat(r[0]) for r in rows]

    def save_response(self, response: Response, now: dt.datetime) -> None:
        """Keep the raw response: conditional GET revalidates it, --replay re-parses it."""
        self.db.execute(
            "INSERT OR REPLACE INTO responses(url, status, headers, body, fetched_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                response.url,
                response.status,
                json.dumps(dict(response.headers)),
                response.body,
                now.isoformat(),
            ),
        )

    def load_response(self, url: str) -> Response | None:
        row = self.db.execute(
            "SELECT url, status, headers, body FROM responses WHERE url = ?", (url,)
        ).fetchone()
        if row is None:
            return None
        return Response(row[0], row[1], bytes(row[3]), json.loads(row[2]), from_store=True)

    def candidates(self, days: Iterable[dt.date]) -> list[PaperData]:
        """Papers listed on any of ``days``, each once, on the earliest of its days."""
        wanted = sorted({d.isoformat() for d in days})
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        rows = self.db.execute(
            f"SELECT p.data, MIN(d.day) FROM paper_days d JOIN papers p ON p.id = d.paper_id "
            f"WHERE d.day IN ({marks}) GROUP BY p.id ORDER BY p.id",
            wanted,
        ).fetchall()
        return [_load(data, day) for data, day in rows]

    def sent_ids(self, subscriber: str) -> frozenset[str]:
        rows = self.db.execute(
            "SELECT paper_id FROM deliveries WHERE subscriber = ?", (subscriber.casefold(),)
        )
        return frozenset(r[0] for r in rows)

    def record_delivery(
        self, subscriber: str, paper_ids: Iterable[str], digest_id: str, now: dt.datetime
    ) -> None:
        with self._tx():
            self.db.executemany(
                "INSERT OR IGNORE INTO deliveries(subscriber, paper_id, digest_id, delivered_at) "
                "VALUES (?, ?, ?, ?)",
                [(subscriber.casefold(), pid, digest_id, now.isoformat()) for pid in paper_ids],
            )

    def _tx(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _dump(paper: PaperData) -> str:
    data = dataclasses.asdict(paper)
    data.pop("day")  # a paper can be on several days; paper_days holds them
    return json.dumps(data, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def _json_default(value: Any) -> str:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


_FIELDS = frozenset(f.name for f in dataclasses.fields(PaperData)) - {"day"}


def _load(data: str, day: str) -> PaperData:
    raw = {k: v for k, v in json.loads(data).items() if k in _FIELDS}
    for key in ("published_at", "submitted_at"):
        if raw.get(key):
            raw[key] = dt.datetime.fromisoformat(raw[key])
    raw["authors"] = tuple(raw.get("authors") or ())
    raw["ai_keywords"] = tuple(raw.get("ai_keywords") or ())
    raw["categories"] = tuple(raw.get("categories") or ())
    return PaperData(day=dt.date.fromisoformat(day), **raw)
