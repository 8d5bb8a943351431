"""The state in a PostgreSQL database: ``PostgresStore``, the ``Store`` protocol in plain SQL.

The same tables, columns and meanings as ``SqliteStore`` (``pg_migrations``), written with
psycopg 3 and no ORM: the SQL is small, and what the ledger needs of the database (row locks
with ``SKIP LOCKED``, advisory locks) is PostgreSQL's own. The connection is in autocommit
mode; what must be all-or-nothing runs in ``transaction()``. The URL shown in messages never
carries a password (``shown_url``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
import time
import zlib
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any, LiteralString

import psycopg

from newsletter.errors import StoreError
from newsletter.models import (
    LedgerRow,
    LedgerStatus,
    PaperData,
    Subscriber,
    SubscriberRecord,
    merge_papers,
)
from newsletter.store import pg_migrations as migrations
from newsletter.store.ledger_rows import UNFINISHED, LedgerRows, owner
from newsletter.store.location import shown_url
from newsletter.store.sqlite import _dump, _load
from newsletter.store.subscribers import Cursor


class EmptyDatabase(StoreError):
    """A database opened read-only holds no state yet (``open_store`` reads it as empty)."""


def connect_problem(url: str, password: str | None) -> str | None:
    """Why the database at ``url`` cannot be reached now (for ``check``), or None."""
    extra: dict[str, Any] = {"password": password} if password else {}
    try:
        psycopg.connect(url, connect_timeout=10, **extra).close()
    except psycopg.Error as e:
        return f"cannot connect: {_one_line(e)}"
    return None


def _one_line(error: BaseException) -> str:
    """libpq's messages run over several lines (a hint, the server's address): one line."""
    return " ".join(str(error).split()) or type(error).__name__


def _lock_key(name: str) -> int:
    """A stable 32-bit key for an advisory lock named ``name``."""
    return zlib.crc32(f"newsletter:{name}".encode())


#: SQLite's SQL in ``SubscriberRows`` -> PostgreSQL's: (pattern, replacement), in order.
_REWRITES = (
    (re.compile(r"INSERT OR IGNORE INTO (.*)", re.S), r"INSERT INTO \1 ON CONFLICT DO NOTHING"),
    (re.compile(r"\bORDER BY rowid\b"), "ORDER BY seq"),
    (
        re.compile(r"json_set\((\w+), '\$\.(\w+)', json\('(.*?)'\)\)"),
        r"jsonb_set(\1::jsonb, '{\2}', '\3'::jsonb)::text",
    ),
    (re.compile(r"\?"), "%s"),
)


@functools.lru_cache(maxsize=256)
def _postgres_sql(sql: str) -> str:
    """A statement of ``SubscriberRows`` as PostgreSQL reads it (placeholders, upserts, the
    order rows were added in, a JSON edit); the tests run every one on both backends."""
    for pattern, replacement in _REWRITES:
        sql = pattern.sub(replacement, sql)
    return sql


class PostgresStore(LedgerRows):
    """The state database at ``url``, opened for one command; a database error that leaves
    the ``with`` block becomes a ``StoreError`` naming the URL (without its password).

    ``password``: given, it is used (``newsletter.state_password_env``); else libpq's own
    (``PGPASSWORD``, ``~/.pgpass``). ``read_only`` never writes nor migrates.
    """

    created = False
    db: psycopg.Connection[tuple[Any, ...]]

    def __init__(self, url: str, *, read_only: bool = False, password: str | None = None) -> None:
        self.url = url
        self.path = shown_url(url)  # what messages name, as SqliteStore names its file
        self.read_only = read_only
        self._in_flight: dict[tuple[int, str], Any] = {}  # see SqliteStore.__init__
        try:
            # A password given goes in as a keyword: libpq's own (PGPASSWORD, .pgpass) otherwise.
            extra: dict[str, Any] = {"password": password} if password else {}
            self.db = psycopg.connect(
                url, autocommit=True, connect_timeout=10, application_name="newsletter", **extra
            )
        except psycopg.Error as e:
            raise StoreError(self.path, f"cannot connect: {_one_line(e)}") from e
        try:
            if read_only:
                self.db.execute("SET default_transaction_read_only = on")
                self._check_version()
            else:
                self._migrate()
        except psycopg.Error as e:
            self.db.close()
            raise StoreError(self.path, f"cannot open the state database: {_one_line(e)}") from e
        except StoreError:
            self.db.close()
            raise

    def _check_version(self) -> None:
        version = migrations.version(self.db)
        if version == migrations.LATEST:
            return
        if version == 0:
            raise EmptyDatabase(self.path, "no state yet: `newsletter fetch` or `send` makes it")
        if version > migrations.LATEST:
            why = "is newer than this program knows"
        else:
            why = "is older than this program's: `newsletter fetch` or `send` upgrades it"
        raise StoreError(self.path, f"schema version {version} {why} ({migrations.LATEST})")

    def _migrate(self) -> None:
        version = migrations.version(self.db)
        if version > migrations.LATEST:
            raise StoreError(
                self.path,
                f"schema version {version} is newer than this program knows ({migrations.LATEST})",
            )
        if version < migrations.LATEST:
            migrations.migrate(self.db)
            self.created = version == 0

    @property
    def schema_version(self) -> int:
        return migrations.version(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.close()
        if isinstance(exc, psycopg.Error):
            raise StoreError(self.path, _one_line(exc)) from exc

    def _rows(self, sql: LiteralString, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.db.execute(sql, params).fetchall()

    def _one(self, sql: LiteralString, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        return self.db.execute(sql, params).fetchone()

    @contextlib.contextmanager
    def _recording(self, what: str) -> Iterator[None]:
        """A write a send depends on: a failure becomes one StoreError naming the database."""
        try:
            yield
        except psycopg.Error as e:
            raise StoreError(self.path, f"cannot record {what}: {_one_line(e)}") from e

    # -- papers, fetched days and raw responses ---------------------------------------------

    def add_papers(self, papers: Iterable[PaperData], now: dt.datetime) -> int:
        stamp = now.isoformat()
        batch = list(papers)
        with self.db.transaction():
            stored = dict(
                self._rows(
                    "SELECT id, data FROM papers WHERE id = ANY(%s)", ([p.id for p in batch],)
                )
            )
            merged = []
            for p in batch:
                if p.id in stored:
                    # Hugging Face fields must survive a later arXiv-only fetch of the paper.
                    p = merge_papers(_load(stored[p.id], p.day.isoformat()), p)
                stored[p.id] = _dump(p)
                merged.append(p)
            with self.db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO papers(id, data, updated_at) VALUES (%s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET data = excluded.data, "
                    "updated_at = excluded.updated_at",
                    [(p.id, _dump(p), stamp) for p in merged],
                )
                cur.executemany(
                    "INSERT INTO paper_days(paper_id, day) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    [(p.id, p.day.isoformat()) for p in merged],
                )
                cur.executemany(
                    "INSERT INTO snapshots(paper_id, fetched_at, upvotes, comments) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (paper_id, fetched_at) DO UPDATE SET "
                    "upvotes = excluded.upvotes, comments = excluded.comments",
                    [(p.id, stamp, p.upvotes, p.comments) for p in merged],
                )
        return len(merged)

    def candidates(self, days: Iterable[dt.date]) -> list[PaperData]:
        """Papers listed on any of ``days``, each once, on the earliest of its days."""
        wanted = sorted({d.isoformat() for d in days})
        if not wanted:
            return []
        rows = self._rows(
            "SELECT p.data, MIN(d.day) FROM paper_days d JOIN papers p ON p.id = d.paper_id "
            "WHERE d.day = ANY(%s) GROUP BY p.id ORDER BY p.id",
            (wanted,),
        )
        return [_load(data, day) for data, day in rows]

    def papers(self, ids: Iterable[str]) -> dict[str, PaperData]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        rows = self._rows(
            "SELECT p.id, p.data, MIN(d.day) FROM papers p JOIN paper_days d "
            "ON d.paper_id = p.id WHERE p.id = ANY(%s) GROUP BY p.id",
            (wanted,),
        )
        return {pid: _load(data, day) for pid, data, day in rows}

    def _snapshots(
        self, paper_ids: Iterable[str], until: dt.datetime | None
    ) -> dict[str, list[tuple[dt.datetime, int]]]:
        """Each paper's (taken at, upvotes) snapshots up to ``until`` (None: all), oldest first."""
        wanted = list(dict.fromkeys(paper_ids))
        history: dict[str, list[tuple[dt.datetime, int]]] = {}
        if not wanted:
            return history
        rows = self._rows(
            "SELECT paper_id, fetched_at, upvotes FROM snapshots WHERE paper_id = ANY(%s) "
            "ORDER BY paper_id, fetched_at",
            (wanted,),
        )
        for pid, fetched_at, upvotes in rows:
            at = dt.datetime.fromisoformat(fetched_at)
            if until is None or at <= until:
                history.setdefault(pid, []).append((at, upvotes))
        return history

    # -- sent-history ----------------------------------------------------------------------

    # -- subscribers (``SubscriberRows``'s SQLite SQL, rewritten where PostgreSQL's differs) --

    def sync_file_subscribers(
        self, subscribers: Iterable[Subscriber], now: dt.datetime, *, write: bool = True
    ) -> dict[str, SubscriberRecord]:
        """``SubscriberRows.sync_file_subscribers``, one instance at a time: instances
        starting together would each add the file's new subscribers (a duplicate key)."""
        if not write:
            return super().sync_file_subscribers(subscribers, now, write=False)
        wanted = list(subscribers)
        with self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("subscribers"),))
            return super().sync_file_subscribers(wanted, now, write=True)

    def _tx(self) -> contextlib.AbstractContextManager[Any]:
        return self.db.transaction()  # type: ignore[no-any-return,unused-ignore]

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.db.execute(_postgres_sql(sql).encode(), params)

    def _exec_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        with self.db.cursor() as cur:
            cur.executemany(_postgres_sql(sql).encode(), list(rows))
            return cur.rowcount  # the sum over the rows (psycopg >= 3.1)

    # -- the send ledger -------------------------------------------------------------------

    @contextlib.contextmanager
    def _advisory_lock(self, name: str, wait: float, busy: str) -> Iterator[None]:
        """A session advisory lock; PostgreSQL releases it when the connection ends (a
        process killed holds it no longer). ``busy``: why we gave up after ``wait``."""
        key = _lock_key(name)
        deadline = time.monotonic() + wait
        while True:
            row = self._one("SELECT pg_try_advisory_lock(%s)", (key,))
            if row and row[0]:
                break
            if time.monotonic() >= deadline:
                raise StoreError(self.path, busy)
            time.sleep(0.1)
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                self.db.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def send_lock(self, wait: float = 0.0) -> contextlib.AbstractContextManager[None]:
        """Nothing to hold: several senders share a run here, each with its own claims."""
        return contextlib.nullcontext()

    def signup_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while a sign-up is decided, by every instance serving this database: one
        email per address holds however many serve it."""
        return self._advisory_lock("signup", 30, "another instance holds the sign-up lock")

    # -- sharing a run: claims with a lease, in the database's own time -------------------

    shared = True

    def freeze_lock(self, day: dt.date, wait: float) -> contextlib.AbstractContextManager[None]:
        """Held while the run of ``day`` is opened and frozen: the first sender freezes it,
        the others wait here and then find it frozen."""
        busy = f"the run of {day} is still being frozen by another sender; try again later"
        return self._advisory_lock(f"freeze:{day.isoformat()}", wait, busy)

    def cap_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while a sender counts the daily cap and claims within it."""
        busy = "another sender holds the daily cap's lock"
        return self._advisory_lock("cap", 600, busy)

    def expire_claims(self, now: dt.datetime) -> list[str]:
        """Claims whose lease lapsed (their sender died or stalled): rows in flight become
        ``unknown`` (the server may have them), the rest are nobody's again. The addresses
        made unknown, for the log."""
        with self._recording("the claims whose lease lapsed"), self.db.transaction():
            lapsed = [
                r[0]
                for r in self._rows(
                    "SELECT id FROM claims WHERE lease_until < clock_timestamp() "
                    "FOR UPDATE SKIP LOCKED"
                )
            ]
            if not lapsed:
                return []
            rows = self._rows(
                "SELECT run_id, subscriber, email, digest FROM ledger "
                "WHERE claim_id = ANY(%s) AND status = 'sending' ORDER BY seq FOR UPDATE",
                (lapsed,),
            )
            for run_id, key, _, digest in rows:
                detail = "in flight when its sender's claim lapsed"
                self._finish(run_id, key, "unknown", detail, now, digest)
            self.db.execute("UPDATE ledger SET claim_id = NULL WHERE claim_id = ANY(%s)", (lapsed,))
            self.db.execute("DELETE FROM claims WHERE id = ANY(%s)", (lapsed,))
        return [email for _, _, email, _ in rows]

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
        """Claim up to ``limit`` (None: all) of the run's unclaimed rows for ``keys``, in
        the order they were frozen (see ``SqliteStore.claim``): rows another sender is
        claiming at this moment are skipped, not waited for (``SKIP LOCKED``)."""
        with self._recording("a claim on the run's rows"), self.db.transaction():
            row = self._one(
                "INSERT INTO claims(run_id, owner, lease_until) VALUES "
                "(%s, %s, clock_timestamp() + make_interval(secs => %s)) RETURNING id",
                (run_id, owner(), lease_seconds),
            )
            assert row is not None
            claim_id = int(row[0])
            rows = self._rows(
                "WITH picked AS (SELECT seq FROM ledger WHERE run_id = %s AND claim_id IS NULL "
                "AND subscriber = ANY(%s) AND (status = 'pending' OR "
                "(status = ANY(%s) AND updated_at < %s)) ORDER BY seq LIMIT %s "
                "FOR UPDATE SKIP LOCKED) "
                "UPDATE ledger l SET claim_id = %s FROM picked WHERE l.seq = picked.seq "
                "RETURNING l.seq, l.subscriber, l.email, '', l.status, l.deferrals",
                (run_id, list(keys), list(again), since.isoformat(), limit, claim_id),
            )
        rows.sort(key=lambda r: r[0])
        return claim_id, [LedgerRow(run_id, *r[1:]) for r in rows]

    def renew_claim(self, claim_id: int, lease_seconds: float, now: dt.datetime) -> bool:
        """Extend the lease; False: it had lapsed and the claim is gone (stop the batch)."""
        with self._recording("a claim's renewal"):
            cur = self.db.execute(
                "UPDATE claims SET lease_until = clock_timestamp() + make_interval(secs => %s) "
                "WHERE id = %s AND lease_until >= clock_timestamp()",
                (lease_seconds, claim_id),
            )
        return cur.rowcount > 0

    def pace(self, interval: float) -> float:
        """Seconds to wait before the next message starts: every sender takes the next slot,
        ``interval`` after the one before, from one row (the rate holds for them all)."""
        row = self._one(
            "INSERT INTO send_pace AS p (name, next_at) VALUES "
            "('smtp', extract(epoch FROM clock_timestamp()) + %s) "
            "ON CONFLICT (name) DO UPDATE SET next_at = "
            "GREATEST(p.next_at, extract(epoch FROM clock_timestamp())) + %s "
            "RETURNING next_at - %s - extract(epoch FROM clock_timestamp())",
            (interval, interval, interval),
        )
        return max(0.0, float(row[0])) if row else 0.0

    def supersede_before(self, day: dt.date, now: dt.datetime) -> list[str]:
        """Cancel what earlier days' runs left pending or deferred: today's windows cover those papers."""
        with self.db.transaction():
            rows = self._rows(
                "UPDATE ledger l SET status = 'cancelled', detail = 'superseded by the run of ' "
                "|| %s, updated_at = %s FROM runs r WHERE r.id = l.run_id AND r.day < %s "
                "AND l.status = ANY(%s) RETURNING l.run_id, l.email, l.seq",
                (day.isoformat(), now.isoformat(), day.isoformat(), list(UNFINISHED)),
            )
            self.db.execute(
                "UPDATE runs SET finished_at = %s WHERE id = ANY(%s) AND finished_at IS NULL",
                (now.isoformat(), list({r[0] for r in rows})),
            )
        return [email for _, email, _ in sorted(rows, key=lambda r: r[2])]

    def recover_in_flight(self, run_id: int, now: dt.datetime) -> list[str]:
        """Rows left ``sending`` by a process that died: the server may have them, so ``unknown``."""
        what = "the messages in flight when a previous send stopped"
        with self._recording(what), self.db.transaction():
            rows = self._rows(
                "SELECT subscriber, email, digest FROM ledger WHERE run_id = %s "
                "AND status = 'sending' AND claim_id IS NULL ORDER BY seq FOR UPDATE",
                (run_id,),
            )
            for key, _, digest in rows:
                self._finish(
                    run_id, key, "unknown", "in flight when a previous send stopped", now, digest
                )
        return [email for _, email, _ in rows]

    def run_papers(self, run_id: int) -> dict[str, PaperData]:
        """Every paper of the run's frozen digests, read once: a ``frozen_digest`` cache."""
        rows = self._rows(
            "SELECT DISTINCT p ->> 'id' FROM ledger l, "
            "jsonb_array_elements(l.digest::jsonb -> 'picks') p WHERE l.run_id = %s",
            (run_id,),
        )
        return self.papers(pid for (pid,) in rows)

    # -- inbound: bounces, complaints, mailto unsubscribes ---------------------------------

    # -- the run log -----------------------------------------------------------------------
