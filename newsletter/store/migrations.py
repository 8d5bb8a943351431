"""The SQLite schema as named migrations, in order; ``PRAGMA user_version`` counts those run.

Each migration is a function of its own that takes the connection and runs its statements;
``migrate`` runs the ones a file lacks, each in a transaction of its own, so a file is
always at one version or the next. A new migration is a new function appended to
``MIGRATIONS``: one never changes once released (files out there have run it).
"""

from __future__ import annotations

import secrets
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


def subscribers_in_the_store(db: sqlite3.Connection) -> None:
    """7: subscribers as rows (readers who sign up, the operator's, the file's), with status,
    source, preferences and consent record; the keyed hashes of removed addresses; what the
    sign-up limits count; a random key for those hashes. ``subscriber_state`` moves in:
    ``unsubscribed`` stays, ``suppressed`` becomes ``bounced``; those addresses came from the
    file (the only subscribers there were), so their source is ``config``."""
    _run(
        db,
        """
        CREATE TABLE subscribers (
            id            TEXT PRIMARY KEY,      -- opaque, random: links and VERP carry it
            email         TEXT NOT NULL,         -- as given
            key           TEXT NOT NULL UNIQUE,  -- casefolded address
            name          TEXT,
            topics        TEXT NOT NULL,         -- JSON list of topic slugs
            cadence       TEXT NOT NULL CHECK (cadence IN ('daily', 'weekly')),
            max_papers    INTEGER NOT NULL,
            min_upvotes   INTEGER NOT NULL,
            timezone      TEXT NOT NULL,
            send_at       TEXT,                  -- HH:MM:SS local; NULL: schedule.daily_at
            keywords      TEXT NOT NULL,         -- JSON list
            exclude       TEXT NOT NULL,         -- JSON list
            sections      INTEGER NOT NULL,
            status        TEXT NOT NULL CHECK (status IN
                              ('pending', 'active', 'paused', 'unsubscribed', 'bounced',
                               'complained')),
            source        TEXT NOT NULL CHECK (source IN ('web', 'cli', 'import', 'config')),
            reason        TEXT NOT NULL,         -- why the status last changed
            created_at    TEXT NOT NULL,         -- the consent record: the sign-up ...
            signup_client TEXT,                  -- ... from this client address
            confirmed_at  TEXT,                  -- ... confirmed then
            confirm_client TEXT,                 -- ... from this one
            updated_at    TEXT NOT NULL
        )""",
        "CREATE INDEX subscribers_status ON subscribers(status, created_at)",
        """
        CREATE TABLE removed_subscribers (
            address_hash TEXT PRIMARY KEY,       -- keyed hash of the casefolded address
            removed_at   TEXT NOT NULL
        )""",
        """
        CREATE TABLE signup_mail (
            address_hash TEXT NOT NULL,          -- a mail sent because of a sign-up
            sent_at      TEXT NOT NULL
        )""",
        "CREATE INDEX signup_mail_address ON signup_mail(address_hash, sent_at)",
        """
        CREATE TABLE signup_attempts (
            client_hash  TEXT NOT NULL,          -- a sign-up posted from this client
            at           TEXT NOT NULL
        )""",
        "CREATE INDEX signup_attempts_client ON signup_attempts(client_hash, at)",
        """
        CREATE TABLE store_meta (
            name         TEXT PRIMARY KEY,
            value        BLOB NOT NULL
        )""",
        "INSERT INTO store_meta(name, value) VALUES ('hash_key', randomblob(32))",
    )
    rows = db.execute(
        "SELECT subscriber, state, COALESCE(reason, ''), changed_at FROM subscriber_state"
    )
    db.executemany(
        "INSERT INTO subscribers(id, email, key, topics, cadence, max_papers, min_upvotes, "
        "timezone, keywords, exclude, sections, status, source, reason, created_at, updated_at) "
        "VALUES (?, ?, ?, '[]', 'daily', 10, 0, 'UTC', '[]', '[]', 0, ?, 'config', ?, ?, ?)",
        [
            (
                new_subscriber_id(),
                key,
                key,
                "bounced" if state == "suppressed" else "unsubscribed",
                reason,
                changed,
                changed,
            )
            for key, state, reason, changed in rows.fetchall()
        ],
    )
    db.execute("DROP TABLE subscriber_state")


def new_subscriber_id() -> str:
    """An opaque subscriber id: 72 random bits, 12 URL-safe characters (it fits in a VERP
    token's 12 bytes)."""
    return secrets.token_urlsafe(9)


def inbound_events(db: sqlite3.Connection) -> None:
    """8: what came back: bounces (hard, soft), complaints and mailto unsubscribes, one row each,
    for the soft-bounce count, the operator's counts and the bounce and complaint rates."""
    _run(
        db,
        """
        CREATE TABLE inbound_events (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            subscriber  TEXT NOT NULL,          -- the subscriber's opaque id
            kind        TEXT NOT NULL CHECK (kind IN ('hard', 'soft', 'complaint', 'unsubscribe')),
            status      TEXT,                   -- the enhanced status code, 5.1.1
            detail      TEXT NOT NULL,          -- why, on one line (a reason, a server's words)
            run_id      INTEGER,                -- the run the message was sent in, when known
            at          TEXT NOT NULL,
            cleared     INTEGER NOT NULL DEFAULT 0  -- 1: counted before a resubscribe
        )""",
        "CREATE INDEX inbound_events_subscriber ON inbound_events(subscriber, at)",
        "CREATE INDEX inbound_events_at ON inbound_events(at)",
    )


def claims_jobs_and_pace(db: sqlite3.Connection) -> None:
    """9: sharing a run: claims on ledger rows (with a lease), once-only jobs by slot, and the
    next message's start for a rate shared by every sender. A SQLite state has one sender
    at a time (its file lock), so its claims never lapse; PostgreSQL's do."""
    _run(
        db,
        """
        CREATE TABLE claims (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id      INTEGER NOT NULL REFERENCES runs(id),
            owner       TEXT NOT NULL,          -- host and pid of the sender
            lease_until TEXT NOT NULL
        )""",
        "ALTER TABLE ledger ADD COLUMN claim_id INTEGER",  # NULL: nobody's
        "CREATE INDEX ledger_claim ON ledger(claim_id)",
        """
        CREATE TABLE jobs_fired (
            job         TEXT NOT NULL,          -- send, purge, poll, ...
            slot        TEXT NOT NULL,          -- which firing (a send time, a day)
            owner       TEXT NOT NULL,
            fired_at    TEXT NOT NULL,
            PRIMARY KEY (job, slot)
        )""",
        """
        CREATE TABLE send_pace (
            name        TEXT PRIMARY KEY,
            next_at     REAL NOT NULL           -- Unix time the next message may start
        )""",
    )


MIGRATIONS: Sequence[Migration] = (
    papers_days_snapshots_and_deliveries,
    digests_and_skipped_papers,
    send_ledger_and_subscriber_states,
    raw_responses_and_failed_days,
    run_log,
    deferred_ledger_rows,
    subscribers_in_the_store,
    inbound_events,
    claims_jobs_and_pace,
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
