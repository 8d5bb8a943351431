"""Copy a whole state from one backend to the other (``newsletter state copy``), table by table.

Both backends have the same tables and columns at the same schema version (``migrations``,
``pg_migrations``), so rows move as they are; the ledger keeps its order (SQLite's rowid,
PostgreSQL's ``seq``), which a run sends in. ``copy_state`` refuses a target that holds any
row, writes everything in one transaction, then compares each table's row count and a
checksum of the ledger on both sides. A preview of a PostgreSQL state uses it too: the
database copied into a SQLite scratch in memory.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from newsletter.errors import StoreError
from newsletter.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from newsletter.store.postgres import PostgresStore

AnyStore: TypeAlias = "SqliteStore | PostgresStore"

#: Every table a state keeps, in an order that satisfies the foreign keys, with its columns.
TABLES: dict[str, tuple[str, ...]] = {
    "papers": ("id", "data", "updated_at"),
    "paper_days": ("paper_id", "day"),
    "snapshots": ("paper_id", "fetched_at", "upvotes", "comments"),
    "fetched_days": ("source", "day", "fetched_at", "papers", "error"),
    "deliveries": ("subscriber", "paper_id", "digest_id", "delivered_at"),
    "digests": ("subscriber", "digest_id", "day", "delivered_at", "papers"),
    "skipped": ("subscriber", "paper_id", "digest_id"),
    "runs": ("id", "day", "started_at", "finished_at"),
    "ledger": (
        *("run_id", "subscriber", "email", "digest", "papers", "status", "attempts"),
        *("detail", "message_id", "updated_at", "deferrals"),
    ),
    "responses": ("url", "status", "headers", "body", "fetched_at"),
    "subscribers": (
        *("id", "email", "key", "name", "topics", "cadence", "max_papers", "min_upvotes"),
        *("timezone", "send_at", "keywords", "exclude", "sections", "status", "source"),
        *("reason", "created_at", "signup_client", "confirmed_at", "confirm_client"),
        "updated_at",
    ),
    "removed_subscribers": ("address_hash", "removed_at"),
    "signup_mail": ("address_hash", "sent_at"),
    "signup_attempts": ("client_hash", "at"),
    # The key of the keyed hashes: a copy with another would not know the removed addresses.
    "store_meta": ("name", "value"),
    "inbound_events": (
        *("id", "subscriber", "kind", "status", "detail", "run_id", "at", "cleared"),
    ),
    "run_log": (
        *("id", "kind", "day", "started_at", "finished_at", "papers", "sent", "failed"),
        *("unknown", "nothing_new", "error"),
    ),
}

#: Tables of running instances' coordination, not of the state: never copied.
TRANSIENT: frozenset[str] = frozenset({"claims", "jobs_fired", "send_pace"})

#: Tables a new state fills itself (its own random hash key): the copy's rows replace them.
SEEDED = ("store_meta",)

#: Tables whose ids a backend hands out: the target's next id follows the copied ones.
SERIAL = ("runs", "run_log", "inbound_events")


class TargetNotEmpty(StoreError):
    """``copy_state`` refuses a target that holds any row: nothing is overwritten."""


@dataclass(frozen=True, slots=True)
class Copied:
    """What ``copy_state`` moved: rows per table, and the ledger's checksum on both sides."""

    rows: dict[str, int]
    checksum: str


def _order(store: AnyStore, table: str) -> str:
    if table in ("ledger", "subscribers"):  # the order they were added in matters
        return "rowid" if isinstance(store, SqliteStore) else "seq"
    return ", ".join(str(i) for i in range(1, len(TABLES[table]) + 1))


def rows(store: AnyStore, table: str) -> Iterator[tuple[Any, ...]]:
    """The table's rows, in a fixed order (the ledger's own)."""
    sql = f"SELECT {', '.join(TABLES[table])} FROM {table} ORDER BY {_order(store, table)}"
    if isinstance(store, SqliteStore):
        yield from store.db.execute(sql)
        return
    with store.db.cursor() as cur:
        cur.execute(sql.encode())  # names from TABLES only
        for row in cur:
            yield tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)


def counts(store: AnyStore) -> dict[str, int]:
    """Rows per table."""
    found = {}
    for table in TABLES:
        sql = f"SELECT COUNT(*) FROM {table}"
        if isinstance(store, SqliteStore):
            row = store.db.execute(sql).fetchone()
        else:
            row = store.db.execute(sql.encode()).fetchone()
        found[table] = int(row[0]) if row else 0
    return found


def ledger_checksum(store: AnyStore) -> str:
    """SHA-256 of the ledger's rows, by run and recipient, every column: equal on both
    backends when the copy is whole."""
    digest = hashlib.sha256()
    for row in sorted(rows(store, "ledger"), key=lambda r: (r[0], r[1])):
        digest.update(json.dumps(list(row), ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def copy_state(source: AnyStore, target: AnyStore) -> Copied:
    """Every table of ``source`` into ``target``, which must hold no row; checked after."""
    full = {t: n for t, n in counts(target).items() if n and t not in SEEDED}
    if full:
        tables = ", ".join(f"{t} ({n} rows)" for t, n in full.items())
        raise TargetNotEmpty(target.path, f"the target is not empty: {tables}; nothing copied")
    _write_all(source, target)
    copied, found = counts(source), counts(target)
    if copied != found:
        wrong = [
            f"{t}: {copied[t]} copied, {found[t]} found" for t in TABLES if copied[t] != found[t]
        ]
        raise StoreError(target.path, f"the copy is not whole: {'; '.join(wrong)}")
    checksum = ledger_checksum(source)
    if ledger_checksum(target) != checksum:
        raise StoreError(target.path, "the copy's ledger differs from the original's (checksum)")
    return Copied(copied, checksum)


def _write_all(source: AnyStore, target: AnyStore) -> None:
    if isinstance(target, SqliteStore):
        _write_sqlite(source, target.db)
        return
    db = target.db
    with db.transaction(), db.cursor() as cur:
        for table in SEEDED:
            cur.execute(f"DELETE FROM {table}".encode())
        for table, columns in TABLES.items():
            marks = ", ".join(["%s"] * len(columns))
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
            cur.executemany(sql.encode(), list(rows(source, table)))
        for table in SERIAL:
            sql = (
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"COALESCE(MAX(id), 0) + 1, false) FROM {table}"
            )
            cur.execute(sql.encode())


def _write_sqlite(source: AnyStore, db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        for table in SEEDED:
            db.execute(f"DELETE FROM {table}")
        for table, columns in TABLES.items():
            marks = ", ".join(["?"] * len(columns))
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
            db.executemany(sql, rows(source, table))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
