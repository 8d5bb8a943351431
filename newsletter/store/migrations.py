"""The SQLite schema as named migrations, in order; ``PRAGMA user_version`` counts those run.

Each migration is a function of its own that takes the connection and runs its statements;
``migrate`` runs the ones a file lacks, each in a transaction of its own, so a file is
always at one version or the next. A new migration is a new function appended to
``MIGRATIONS``: one never changes once released (files out there have run it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

Migration = Callable[[sqlite3.Connection], None]


def _run(db: sqlite3.Connection, *statements: str) -> None:
    for statement in statements:
        db.execute(statement)


def papers_days_snapshots_and_deliveries(db: sqlite3.Connection) -> None:
    """1: papers, the days they were listed, upvote snapshots, fetched days, deliveries."""
    _run(
        db,
        """
        CREATE TABLE papers (
            id          TEXT PRIMARY KEY,
            data        TEXT NOT NULL,          -- PaperData as JSON, newest fetch wins
            updated_at  TEXT NOT NULL
        )""",
        """
        CREATE TABLE paper_days (
            paper_id    TEXT NOT NULL REFERENCES papers(id),
            day         TEXT NOT NULL,          -- YYYY-MM-DD, the daily list
            PRIMARY KEY (paper_id, day)
        )""",
        "CREATE INDEX paper_days_day ON paper_days(day)",
        """
        CREATE TABLE snapshots (
            paper_id    TEXT NOT NULL REFERENCES papers(id),
            fetched_at  TEXT NOT NULL,
            upvotes     INTEGER NOT NULL,
            comments    INTEGER NOT NULL,
            PRIMARY KEY (paper_id, fetched_at)
        )""",
        """
        CREATE TABLE fetched_days (
            source      TEXT NOT NULL,
            day         TEXT NOT NULL,
            fetched_at  TEXT NOT NULL,
            papers      INTEGER NOT NULL,
            PRIMARY KEY (source, day)
        )""",
        """
        CREATE TABLE deliveries (
            subscriber  TEXT NOT NULL,          -- casefolded address
            paper_id    TEXT NOT NULL,
            digest_id   TEXT NOT NULL,
            delivered_at TEXT NOT NULL,
            PRIMARY KEY (subscriber, paper_id)
        )""",
    )


def digests_and_skipped_papers(db: sqlite3.Connection) -> None:
    """2: digests delivered (for catch-up windows) and papers skipped for too few upvotes."""
    _run(
        db,
        """
        CREATE TABLE digests (
            subscriber  TEXT NOT NULL,
            digest_id   TEXT NOT NULL,
            day         TEXT NOT NULL,          -- the run's day (daily list) it was built for
            delivered_at TEXT NOT NULL,
            papers      INTEGER NOT NULL,
            PRIMARY KEY (subscriber, digest_id)
        )""",
        """
        CREATE TABLE skipped (
            subscriber  TEXT NOT NULL,
            paper_id    TEXT NOT NULL,
            digest_id   TEXT NOT NULL,
            PRIMARY KEY (subscriber, paper_id)
        )""",
    )


def send_ledger_and_subscriber_states(db: sqlite3.Connection) -> None:
    """3: the send ledger (one frozen run per day, one row per recipient) and subscriber states."""
    _run(
        db,
        """
        CREATE TABLE runs (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            day         TEXT NOT NULL UNIQUE,
            started_at  TEXT NOT NULL,
            finished_at TEXT
        )""",
        """
        CREATE TABLE ledger (
            run_id      INTEGER NOT NULL REFERENCES runs(id),
            subscriber  TEXT NOT NULL,          -- casefolded address
            email       TEXT NOT NULL,          -- as configured
            digest      TEXT NOT NULL,          -- the frozen digest (JSON)
            papers      INTEGER NOT NULL,
            status      TEXT NOT NULL CHECK (status IN
                            ('pending', 'sending', 'sent', 'failed', 'unknown', 'empty', 'cancelled')),
            attempts    INTEGER NOT NULL DEFAULT 0,
            detail      TEXT,
            message_id  TEXT,
            updated_at  TEXT NOT NULL,
            UNIQUE (run_id, subscriber)
        )""",
        "CREATE INDEX ledger_status ON ledger(run_id, status)",
        "CREATE INDEX ledger_updated ON ledger(status, updated_at)",
        """
        CREATE TABLE subscriber_state (
            subscriber  TEXT PRIMARY KEY,
            state       TEXT NOT NULL CHECK (state IN ('unsubscribed', 'suppressed')),
            reason      TEXT,
            changed_at  TEXT NOT NULL
        )""",
    )


def raw_responses_and_failed_days(db: sqlite3.Connection) -> None:
    """4: raw HTTP responses (conditional GET and --replay), failed fetches to retry."""
    _run(
        db,
        """
        CREATE TABLE responses (
            url           TEXT PRIMARY KEY,     -- the full request URL, query included
            status        INTEGER NOT NULL,
            headers       TEXT NOT NULL,        -- JSON object
            body          BLOB NOT NULL,
            fetched_at    TEXT NOT NULL
        )""",
        "ALTER TABLE fetched_days ADD COLUMN error TEXT",  # NULL: fetched; else why it failed
    )


def run_log(db: sqlite3.Connection) -> None:
    """5: run health: one row per send, run or scheduled run, with its counts and error."""
    _run(
        db,
        """
        CREATE TABLE run_log (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            kind        TEXT NOT NULL,           -- send | run | serve
            day         TEXT,
            started_at  TEXT NOT NULL,
            finished_at TEXT,
            papers      INTEGER,
            sent        INTEGER,
            failed      INTEGER,
            unknown     INTEGER,
            nothing_new INTEGER,
            error       TEXT
        )""",
    )


def deferred_ledger_rows(db: sqlite3.Connection) -> None:
    """6: 'deferred' (a 4xx outlived a run's retries; later runs retry it) and how many runs
    deferred each row. SQLite cannot change a CHECK in place: the table is rebuilt."""
    _run(
        db,
        """
        CREATE TABLE ledger_new (
            run_id      INTEGER NOT NULL REFERENCES runs(id),
            subscriber  TEXT NOT NULL,
            email       TEXT NOT NULL,
            digest      TEXT NOT NULL,
            papers      INTEGER NOT NULL,
            status      TEXT NOT NULL CHECK (status IN
                            ('pending', 'sending', 'sent', 'failed', 'unknown', 'empty', 'cancelled',
                             'deferred')),
            attempts    INTEGER NOT NULL DEFAULT 0,
            detail      TEXT,
            message_id  TEXT,
            updated_at  TEXT NOT NULL,
            deferrals   INTEGER NOT NULL DEFAULT 0,
            UNIQUE (run_id, subscriber)
        )""",
        """
        INSERT INTO ledger_new (rowid, run_id, subscriber, email, digest, papers, status, attempts,
                                detail, message_id, updated_at)
            SELECT rowid, run_id, subscriber, email, digest, papers, status, attempts,
                   detail, message_id, updated_at FROM ledger ORDER BY rowid""",
        "DROP TABLE ledger",
        "ALTER TABLE ledger_new RENAME TO ledger",
        "CREATE INDEX ledger_status ON ledger(run_id, status)",
        "CREATE INDEX ledger_updated ON ledger(status, updated_at)",
    )


MIGRATIONS: Sequence[Migration] = (
    papers_days_snapshots_and_deliveries,
    digests_and_skipped_papers,
    send_ledger_and_subscriber_states,
    raw_responses_and_failed_days,
    run_log,
    deferred_ledger_rows,
)

#: The schema version this program writes and reads.
LATEST = len(MIGRATIONS)


def version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, to: int = LATEST) -> None:
    """Run the migrations ``db`` lacks, up to number ``to``, each all-or-nothing.

    ``db`` must be in autocommit mode (``isolation_level=None``): each migration is its own
    transaction. A file at ``to`` or beyond is left as it is (the caller refuses a newer one).
    """
    at = version(db)
    for number, step in enumerate(MIGRATIONS[at:to], start=at + 1):
        db.execute("BEGIN")
        try:
            step(db)
            db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
