"""The state in one SQLite file: ``SqliteStore``, the ``Store`` protocol's implementation.

What it keeps: every paper seen with the daily lists (days) it appeared on, an upvote
snapshot per fetch (for trending), which days were fetched, and what was delivered to
whom. The schema is ``migrations``' ordered list; ``PRAGMA user_version`` counts how many
have run. Fetching writes papers and snapshots; only a real send writes deliveries. A
preview, a dry run and a test send work on a copy in memory (``SqliteStore.scratch``) and
leave the file as they found it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import json
import os
import sqlite3
import sys
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from newsletter.errors import StoreError
from newsletter.models import (
    LedgerRow,
    LedgerStatus,
    PaperData,
    merge_papers,
)
from newsletter.store import migrations
from newsletter.store.ledger_rows import UNFINISHED, LedgerRows, owner


class SqliteStore(LedgerRows):
    """The state file, opened for one command; a SQLite error that leaves the ``with`` block
    becomes a ``StoreError`` naming the file (a read-only file, a full disk).

    Writing (the default), a file that is not there is created, and ``created`` says so; its
    folder must exist. ``read_only`` never writes, creates or migrates the file, nor changes
    its journal mode: a file that is not there reads as an empty state (in memory).
    """

    db: sqlite3.Connection

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = str(path)
        self.read_only = read_only
        # A frozen digest read to be sent, parsed, until its outcome is recorded: finish()
        # needs it again, for the sent-history (bounded: what a send has in flight).
        self._in_flight: dict[tuple[int, str], Any] = {}
        self.created = self.path != ":memory:" and not os.path.exists(self.path)
        try:
            if read_only:
                self.db = self._open_read_only()
                return
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            # A removed subscriber's address must not linger in free pages of the file.
            self.db.execute("PRAGMA secure_delete=ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise StoreError(self.path, f"cannot open the state database: {_explained(e)}") from e
        except OSError as e:
            raise StoreError(self.path, f"cannot create the state database: {e}") from e

    @classmethod
    def scratch(cls, path: Path | str) -> SqliteStore:
        """The state at ``path`` copied into memory, for a preview, a dry run or a test send.

        It reads what the file holds (sent-history, ledger, stored papers) and writes
        nothing back: the file is opened read-only, never created, never changed. With no
        file, an empty state.
        """
        store = cls(":memory:")
        source = Path(path)
        if not source.exists():
            return store
        try:
            with contextlib.closing(
                sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            ) as db:
                db.backup(store.db)
            store._migrate()  # an older file is brought up to date in the copy only
        except sqlite3.DatabaseError as e:
            store.close()
            raise StoreError(str(path), f"cannot read the state database: {e}") from e
        return store

    def _open_read_only(self) -> sqlite3.Connection:
        if self.created:
            self.created = False
            self.db = sqlite3.connect(":memory:", isolation_level=None)
            self._migrate_locked()
            return self.db
        uri = Path(self.path).resolve().as_uri() + "?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
            version = migrations.version(db)
        except sqlite3.OperationalError as e:
            if getattr(e, "sqlite_errorname", "") != "SQLITE_CANTOPEN":
                raise
            # A WAL file in a folder this user cannot write: SQLite cannot make the -shm file
            # a reader needs. Without one no process has it open, so the file is whole as is.
            db = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
            version = migrations.version(db)
        if version != migrations.LATEST:
            db.close()
            if version > migrations.LATEST:
                why = "is newer than this program knows"
            else:  # migrating writes: leave it to a command that writes
                why = "is older than this program's: `newsletter fetch` or `send` upgrades it"
            raise StoreError(self.path, f"schema version {version} {why} ({migrations.LATEST})")
        return db

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.close()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(self.path, _explained(exc)) from exc

    def _migrate(self) -> None:
        if migrations.version(self.db) == migrations.LATEST:
            return
        # Two processes starting at once must not both run a migration.
        with self._file_lock("migrate", wait=60):
            self._migrate_locked()

    def _migrate_locked(self) -> None:
        version = migrations.version(self.db)
        if version > migrations.LATEST:
            raise StoreError(
                self.path,
                f"schema version {version} is newer than this program knows ({migrations.LATEST})",
            )
        migrations.migrate(self.db)

    @property
    def schema_version(self) -> int:
        return migrations.version(self.db)

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

    def _snapshots(
        self, paper_ids: Iterable[str], until: dt.datetime | None
    ) -> dict[str, list[tuple[dt.datetime, int]]]:
        """Each paper's (taken at, upvotes) snapshots up to ``until`` (None: all), oldest first."""
        wanted = list(dict.fromkeys(paper_ids))
        history: dict[str, list[tuple[dt.datetime, int]]] = {}
        for chunk in _chunks(wanted, 500):
            marks = ",".join("?" * len(chunk))
            for pid, fetched_at, upvotes in self.db.execute(
                f"SELECT paper_id, fetched_at, upvotes FROM snapshots WHERE paper_id IN ({marks}) "
                "ORDER BY paper_id, fetched_at",
                chunk,
            ):
                at = dt.datetime.fromisoformat(fetched_at)
                if until is None or at <= until:
                    history.setdefault(pid, []).append((at, upvotes))
        return history

    def _tx(self) -> _Transaction:
        return _Transaction(self.db)

    @contextlib.contextmanager
    def _recording(self, what: str) -> Iterator[None]:
        """A write a send depends on: a failure (disk full, database locked past the timeout,
        an I/O error) becomes one StoreError naming the state file and the cause."""
        try:
            yield
        except sqlite3.Error as e:
            raise StoreError(self.path, f"cannot record {what}: {_explained(e)}") from e

    # -- locks -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _file_lock(self, name: str, wait: float, busy: str = "") -> Iterator[None]:
        """An advisory lock beside the database; the OS releases it when the process dies.
        ``busy``: why we gave up after ``wait`` (by default: another process is sending)."""
        if self.path == ":memory:":
            yield
            return
        path = f"{self.path}.{name}.lock"
        with open(path, "a+") as fh:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        fh.seek(0)
                        holder = fh.read().strip() or "another process"
                        raise StoreError(
                            self.path,
                            busy
                            or f"{holder} is sending from this state file; "
                            "try again when it is done",
                        ) from None
                    time.sleep(0.1)
            with contextlib.suppress(OSError):  # who holds it, for the message above; a full
                fh.seek(0)  # disk must not keep a send from taking its lock
                fh.truncate()
                fh.write(f"newsletter (pid {os.getpid()})")
                fh.flush()
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def send_lock(self, wait: float = 0.0) -> contextlib.AbstractContextManager[None]:
        """Held for the whole of a send, so two processes never deliver the same run."""
        return self._file_lock("send", wait)

    def signup_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while a sign-up is decided, by every process serving this state: one
        email per address holds however many serve it."""
        return self._file_lock("signup", 30, "another process holds the sign-up lock")

    # -- sharing a run: one sender at a time here (the send lock), so claims never lapse ---

    shared = False

    def freeze_lock(self, day: dt.date, wait: float) -> contextlib.AbstractContextManager[None]:
        """Nothing more to hold: the send lock keeps every other sender out."""
        return contextlib.nullcontext()

    def cap_lock(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def expire_claims(self, now: dt.datetime) -> list[str]:
        """No claim lapses while its sender holds the send lock (``recover_in_flight`` frees a
        dead sender's)."""
        return []

    def claim(
        self,
        run_id: int,
        keys: Collection[str],
        *,
        again: Sequence[LedgerStatus],
        since: dt.datetime,
        limit: int | None,
        lease_seconds: float,
        now: dt.datetime,
    ) -> tuple[int, list[LedgerRow]]:
        """Claim up to ``limit`` (None: all) of the run's unclaimed rows for ``keys``, in the
        order they were frozen: ``pending`` ones, and ones in ``again`` last changed before
        ``since`` (a send does not retry in the same pass what it deferred)."""
        # A row's key and address are the caller's strings where they are the same text,
        # and its status the one interned string: 100,000 rows held ~19 MB of copies. The
        # rows are made as they are read, not from a list of every row's values first.
        wanted = {key: key for key in keys}
        marks = ",".join("?" * len(again)) or "NULL"
        rows: list[LedgerRow] = []
        rowids: list[int] = []
        with self._tx():
            # Without the digests' JSON (~1.5 KB each): frozen_digest reads each when it is sent.
            found = self.db.execute(
                f"SELECT rowid, subscriber, email, '', status, deferrals FROM ledger "
                f"WHERE run_id = ? AND claim_id IS NULL AND (status = 'pending' OR "
                f"(status IN ({marks}) AND updated_at < ?)) ORDER BY rowid",
                (run_id, *again, since.isoformat()),
            )
            for rowid, key, email, digest, status, deferrals in found:
                if limit is not None and len(rows) >= limit:
                    break
                key = wanted.get(key)
                if key is None:
                    continue
                email = key if email == key else email
                rows.append(LedgerRow(run_id, key, email, digest, sys.intern(status), deferrals))
                rowids.append(rowid)
            found.close()
            lease = (now + dt.timedelta(seconds=lease_seconds)).isoformat()
            cur = self.db.execute(
                "INSERT INTO claims(run_id, owner, lease_until) VALUES (?, ?, ?)",
                (run_id, owner(), lease),
            )
            claim_id = int(cur.lastrowid or 0)
            self.db.executemany(
                "UPDATE ledger SET claim_id = ? WHERE rowid = ?",
                ((claim_id, rowid) for rowid in rowids),
            )
        return claim_id, rows

    def renew_claim(self, claim_id: int, lease_seconds: float, now: dt.datetime) -> bool:
        lease = (now + dt.timedelta(seconds=lease_seconds)).isoformat()
        cur = self.db.execute("UPDATE claims SET lease_until = ? WHERE id = ?", (lease, claim_id))
        return cur.rowcount > 0

    def pace(self, interval: float) -> float:
        """Seconds to wait before the next message starts, ``interval`` after the one before
        (one sender: kept in memory)."""
        now = time.monotonic()
        at = max(now, getattr(self, "_next_at", 0.0))
        self._next_at = at + interval
        return at - now

    # -- the send ledger -------------------------------------------------------------------

    def supersede_before(self, day: dt.date, now: dt.datetime) -> list[str]:
        """Cancel what earlier days' runs left pending or deferred: today's windows cover those papers."""
        rows = self.db.execute(
            "SELECT l.run_id, l.subscriber, l.email FROM ledger l JOIN runs r ON r.id = l.run_id "
            "WHERE r.day < ? AND l.status IN (?, ?)",
            (day.isoformat(), *UNFINISHED),
        ).fetchall()
        with self._tx():
            for run_id, key, _ in rows:
                self.db.execute(
                    "UPDATE ledger SET status = 'cancelled', detail = ?, updated_at = ? "
                    "WHERE run_id = ? AND subscriber = ?",
                    (f"superseded by the run of {day.isoformat()}", now.isoformat(), run_id, key),
                )
                self.db.execute(
                    "UPDATE runs SET finished_at = ? WHERE id = ? AND finished_at IS NULL",
                    (now.isoformat(), run_id),
                )
        return [email for _, _, email in rows]

    def recover_in_flight(self, run_id: int, now: dt.datetime) -> list[str]:
        """Rows left ``sending`` by a process that died: the server may have them, so ``unknown``."""
        rows = self.db.execute(
            "SELECT subscriber, email, digest FROM ledger WHERE run_id = ? AND status = 'sending'",
            (run_id,),
        ).fetchall()
        with self._recording("the messages in flight when a previous send stopped"), self._tx():
            # Under the send lock every claim is a dead sender's: its rows are nobody's.
            self.db.execute("UPDATE ledger SET claim_id = NULL WHERE run_id = ?", (run_id,))
            self.db.execute("DELETE FROM claims WHERE run_id = ?", (run_id,))
            for key, _, digest in rows:
                self._finish(
                    run_id, key, "unknown", "in flight when a previous send stopped", now, digest
                )
        return [email for _, email, _ in rows]

    def run_papers(self, run_id: int) -> dict[str, PaperData]:
        """Every paper of the run's frozen digests, read once: a ``frozen_digest`` cache.

        Known before the first digest is rebuilt, they can go to the workers that compose
        once, and each digest refers to them by number (``compose.compose_many(papers=)``).
        """
        rows = self.db.execute(
            "SELECT DISTINCT json_extract(p.value, '$.id') "
            "FROM ledger l, json_each(l.digest, '$.picks') p WHERE l.run_id = ?",
            (run_id,),
        )
        return self.papers(pid for (pid,) in rows)

    def papers(self, ids: Iterable[str]) -> dict[str, PaperData]:
        wanted = list(dict.fromkeys(ids))
        out: dict[str, PaperData] = {}
        for chunk in _chunks(wanted, 500):
            marks = ",".join("?" * len(chunk))
            for pid, data, day in self.db.execute(
                f"SELECT p.id, p.data, MIN(d.day) FROM papers p JOIN paper_days d ON d.paper_id = p.id "
                f"WHERE p.id IN ({marks}) GROUP BY p.id",
                chunk,
            ):
                out[pid] = _load(data, day)
        return out

    # -- run health ------------------------------------------------------------------------

    # -- inbound: bounces, complaints, mailto unsubscribes ---------------------------------


def _explained(error: sqlite3.Error) -> str:
    """SQLite's message, and what to look at for the two an operator meets."""
    name = getattr(error, "sqlite_errorname", "")
    if name.startswith("SQLITE_READONLY") or name == "SQLITE_CANTOPEN":
        return f"{error} (can this user write the file and its folder?)"
    if name == "SQLITE_FULL":
        return f"{error} (free some space on its disk)"
    return str(error)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not exc_type:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error:
                # A COMMIT that failed (disk full) leaves the transaction open: end it, or every
                # later write of this connection fails with "cannot start a transaction".
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        # SQLite may have rolled back already (disk full, I/O error): the first error stands.
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


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
