"""The PostgreSQL schema: ``migrations``' named migrations, each with a PostgreSQL body.

The same names in the same order as SQLite's (a test holds them together), so a database
of either kind at version N has the same tables and columns. Where the SQL is the same, the
body is too; where it differs it says why. Columns keep SQLite's types (timestamps and days
as ISO text, JSON as text; text compares byte by byte, ``COLLATE "C"``, as SQLite's does) so
that ``state copy`` moves rows as they are, a comparison of two timestamps means the same on
both, and the ledger's checksum is the same on both. ``schema_version`` (one row) counts
the migrations run; the missing ones run in one transaction under an advisory lock, so two
instances starting at once never both run one, and no instance sees a database half-way.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

import psycopg

from newsletter.store import migrations

Migration = Callable[[psycopg.Connection], None]

#: pg_advisory_xact_lock's key while migrating (any constant the program owns).
MIGRATE_LOCK = 0x6E6C5F6D  # "nl_m"


def _run(db: psycopg.Connection, *statements: str) -> None:
    for statement in statements:
        db.execute(statement)  # type: ignore[call-overload,unused-ignore]  # our constants


def papers_days_snapshots_and_deliveries(db: psycopg.Connection) -> None:
    """1: papers, the days they were listed, upvote snapshots, fetched days, deliveries."""
    _run(
        db,
        """
        CREATE TABLE papers (
            id          TEXT COLLATE "C" PRIMARY KEY,
            data        TEXT COLLATE "C" NOT NULL,
            updated_at  TEXT COLLATE "C" NOT NULL
        )""",
        """
        CREATE TABLE paper_days (
            paper_id    TEXT COLLATE "C" NOT NULL REFERENCES papers(id),
            day         TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (paper_id, day)
        )""",
        "CREATE INDEX paper_days_day ON paper_days(day)",
        """
        CREATE TABLE snapshots (
            paper_id    TEXT COLLATE "C" NOT NULL REFERENCES papers(id),
            fetched_at  TEXT COLLATE "C" NOT NULL,
            upvotes     INTEGER NOT NULL,
            comments    INTEGER NOT NULL,
            PRIMARY KEY (paper_id, fetched_at)
        )""",
        """
        CREATE TABLE fetched_days (
            source      TEXT COLLATE "C" NOT NULL,
            day         TEXT COLLATE "C" NOT NULL,
            fetched_at  TEXT COLLATE "C" NOT NULL,
            papers      INTEGER NOT NULL,
            PRIMARY KEY (source, day)
        )""",
        """
        CREATE TABLE deliveries (
            subscriber  TEXT COLLATE "C" NOT NULL,
            paper_id    TEXT COLLATE "C" NOT NULL,
            digest_id   TEXT COLLATE "C" NOT NULL,
            delivered_at TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (subscriber, paper_id)
        )""",
    )


def digests_and_skipped_papers(db: psycopg.Connection) -> None:
    """2: digests delivered (for catch-up windows) and papers skipped for too few upvotes."""
    _run(
        db,
        """
        CREATE TABLE digests (
            subscriber  TEXT COLLATE "C" NOT NULL,
            digest_id   TEXT COLLATE "C" NOT NULL,
            day         TEXT COLLATE "C" NOT NULL,
            delivered_at TEXT COLLATE "C" NOT NULL,
            papers      INTEGER NOT NULL,
            PRIMARY KEY (subscriber, digest_id)
        )""",
        """
        CREATE TABLE skipped (
            subscriber  TEXT COLLATE "C" NOT NULL,
            paper_id    TEXT COLLATE "C" NOT NULL,
            digest_id   TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (subscriber, paper_id)
        )""",
    )


def send_ledger_and_subscriber_states(db: psycopg.Connection) -> None:
    """3: the send ledger (one frozen run per day, one row per recipient) and subscriber states.

    ``seq`` is SQLite's rowid: the order rows were frozen in, which a run sends them in."""
    _run(
        db,
        """
        CREATE TABLE runs (
            id          BIGSERIAL PRIMARY KEY,
            day         TEXT COLLATE "C" NOT NULL UNIQUE,
            started_at  TEXT COLLATE "C" NOT NULL,
            finished_at TEXT COLLATE "C"
        )""",
        """
        CREATE TABLE ledger (
            seq         BIGSERIAL NOT NULL,
            run_id      BIGINT NOT NULL REFERENCES runs(id),
            subscriber  TEXT COLLATE "C" NOT NULL,
            email       TEXT COLLATE "C" NOT NULL,
            digest      TEXT COLLATE "C" NOT NULL,
            papers      INTEGER NOT NULL,
            status      TEXT COLLATE "C" NOT NULL CONSTRAINT ledger_status_check CHECK (status IN
                            ('pending', 'sending', 'sent', 'failed', 'unknown', 'empty', 'cancelled')),
            attempts    INTEGER NOT NULL DEFAULT 0,
            detail      TEXT COLLATE "C",
            message_id  TEXT COLLATE "C",
            updated_at  TEXT COLLATE "C" NOT NULL,
            UNIQUE (run_id, subscriber)
        )""",
        "CREATE INDEX ledger_status ON ledger(run_id, status)",
        "CREATE INDEX ledger_updated ON ledger(status, updated_at)",
        """
        CREATE TABLE subscriber_state (
            subscriber  TEXT COLLATE "C" PRIMARY KEY,
            state       TEXT COLLATE "C" NOT NULL CHECK (state IN ('unsubscribed', 'suppressed')),
            reason      TEXT COLLATE "C",
            changed_at  TEXT COLLATE "C" NOT NULL
        )""",
    )


def raw_responses_and_failed_days(db: psycopg.Connection) -> None:
    """4: raw HTTP responses (conditional GET and --replay), failed fetches to retry."""
    _run(
        db,
        """
        CREATE TABLE responses (
            url           TEXT COLLATE "C" PRIMARY KEY,
            status        INTEGER NOT NULL,
            headers       TEXT COLLATE "C" NOT NULL,
            body          BYTEA NOT NULL,
            fetched_at    TEXT COLLATE "C" NOT NULL
        )""",
        'ALTER TABLE fetched_days ADD COLUMN error TEXT COLLATE "C"',
    )


def run_log(db: psycopg.Connection) -> None:
    """5: run health: one row per send, run or scheduled run, with its counts and error."""
    _run(
        db,
        """
        CREATE TABLE run_log (
            id          BIGSERIAL PRIMARY KEY,
            kind        TEXT COLLATE "C" NOT NULL,
            day         TEXT COLLATE "C",
            started_at  TEXT COLLATE "C" NOT NULL,
            finished_at TEXT COLLATE "C",
            papers      INTEGER,
            sent        INTEGER,
            failed      INTEGER,
            unknown     INTEGER,
            nothing_new INTEGER,
            error       TEXT COLLATE "C"
        )""",
    )


def deferred_ledger_rows(db: psycopg.Connection) -> None:
    """6: 'deferred' and how many runs deferred each row. PostgreSQL changes the CHECK in
    place (SQLite rebuilds the table)."""
    _run(
        db,
        "ALTER TABLE ledger DROP CONSTRAINT ledger_status_check",
        """
        ALTER TABLE ledger ADD CONSTRAINT ledger_status_check CHECK (status IN
            ('pending', 'sending', 'sent', 'failed', 'unknown', 'empty', 'cancelled', 'deferred'))
        """,
        "ALTER TABLE ledger ADD COLUMN deferrals INTEGER NOT NULL DEFAULT 0",
    )


def subscribers_in_the_store(db: psycopg.Connection) -> None:
    """7: subscribers as rows, removed addresses' keyed hashes, the sign-up counters and the
    hashes' random key; ``subscriber_state`` moves in (as on SQLite). ``seq`` is SQLite's
    rowid (the order subscribers were added in); the key is made here, not by the server."""
    _run(
        db,
        """
        CREATE TABLE subscribers (
            seq           BIGSERIAL NOT NULL,
            id            TEXT COLLATE "C" PRIMARY KEY,
            email         TEXT COLLATE "C" NOT NULL,
            key           TEXT COLLATE "C" NOT NULL UNIQUE,
            name          TEXT COLLATE "C",
            topics        TEXT COLLATE "C" NOT NULL,
            cadence       TEXT COLLATE "C" NOT NULL CHECK (cadence IN ('daily', 'weekly')),
            max_papers    INTEGER NOT NULL,
            min_upvotes   INTEGER NOT NULL,
            timezone      TEXT COLLATE "C" NOT NULL,
            send_at       TEXT COLLATE "C",
            keywords      TEXT COLLATE "C" NOT NULL,
            exclude       TEXT COLLATE "C" NOT NULL,
            sections      INTEGER NOT NULL,
            status        TEXT COLLATE "C" NOT NULL CHECK (status IN
                              ('pending', 'active', 'paused', 'unsubscribed', 'bounced',
                               'complained')),
            source        TEXT COLLATE "C" NOT NULL
                              CHECK (source IN ('web', 'cli', 'import', 'config')),
            reason        TEXT COLLATE "C" NOT NULL,
            created_at    TEXT COLLATE "C" NOT NULL,
            signup_client TEXT COLLATE "C",
            confirmed_at  TEXT COLLATE "C",
            confirm_client TEXT COLLATE "C",
            updated_at    TEXT COLLATE "C" NOT NULL
        )""",
        "CREATE INDEX subscribers_status ON subscribers(status, created_at)",
        "CREATE INDEX subscribers_seq ON subscribers(seq)",
        """
        CREATE TABLE removed_subscribers (
            address_hash TEXT COLLATE "C" PRIMARY KEY,
            removed_at   TEXT COLLATE "C" NOT NULL
        )""",
        """
        CREATE TABLE signup_mail (
            address_hash TEXT COLLATE "C" NOT NULL,
            sent_at      TEXT COLLATE "C" NOT NULL
        )""",
        "CREATE INDEX signup_mail_address ON signup_mail(address_hash, sent_at)",
        """
        CREATE TABLE signup_attempts (
            client_hash  TEXT COLLATE "C" NOT NULL,
            at           TEXT COLLATE "C" NOT NULL
        )""",
        "CREATE INDEX signup_attempts_client ON signup_attempts(client_hash, at)",
        """
        CREATE TABLE store_meta (
            name         TEXT COLLATE "C" PRIMARY KEY,
            value        BYTEA NOT NULL
        )""",
    )
    db.execute(
        "INSERT INTO store_meta(name, value) VALUES ('hash_key', %s)", (secrets.token_bytes(32),)
    )
    rows = db.execute(
        "SELECT subscriber, state, COALESCE(reason, ''), changed_at FROM subscriber_state "
        "ORDER BY changed_at, subscriber"
    ).fetchall()
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO subscribers(id, email, key, topics, cadence, max_papers, min_upvotes, "
            "timezone, keywords, exclude, sections, status, source, reason, created_at, "
            "updated_at) VALUES (%s, %s, %s, '[]', 'daily', 10, 0, 'UTC', '[]', '[]', 0, %s, "
            "'config', %s, %s, %s)",
            [
                (
                    migrations.new_subscriber_id(),
                    key,
                    key,
                    "bounced" if state == "suppressed" else "unsubscribed",
                    reason,
                    changed,
                    changed,
                )
                for key, state, reason, changed in rows
            ],
        )
    db.execute("DROP TABLE subscriber_state")


def inbound_events(db: psycopg.Connection) -> None:
    """8: what came back: bounces (hard, soft), complaints and mailto unsubscribes."""
    _run(
        db,
        """
        CREATE TABLE inbound_events (
            id          BIGSERIAL PRIMARY KEY,
            subscriber  TEXT COLLATE "C" NOT NULL,
            kind        TEXT COLLATE "C" NOT NULL
                            CHECK (kind IN ('hard', 'soft', 'complaint', 'unsubscribe')),
            status      TEXT COLLATE "C",
            detail      TEXT COLLATE "C" NOT NULL,
            run_id      BIGINT,
            at          TEXT COLLATE "C" NOT NULL,
            cleared     INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX inbound_events_subscriber ON inbound_events(subscriber, at)",
        "CREATE INDEX inbound_events_at ON inbound_events(at)",
    )


def claims_jobs_and_pace(db: psycopg.Connection) -> None:
    """9: sharing a run: claims on ledger rows (with a lease in the database's own time, so
    the machines' clocks do not matter), once-only jobs by slot, and the shared pace."""
    _run(
        db,
        """
        CREATE TABLE claims (
            id          BIGSERIAL PRIMARY KEY,
            run_id      BIGINT NOT NULL REFERENCES runs(id),
            owner       TEXT COLLATE "C" NOT NULL,
            lease_until TIMESTAMPTZ NOT NULL
        )""",
        "ALTER TABLE ledger ADD COLUMN claim_id BIGINT",
        "CREATE INDEX ledger_claim ON ledger(claim_id)",
        "CREATE INDEX ledger_seq ON ledger(run_id, seq)",
        """
        CREATE TABLE jobs_fired (
            job         TEXT COLLATE "C" NOT NULL,
            slot        TEXT COLLATE "C" NOT NULL,
            owner       TEXT COLLATE "C" NOT NULL,
            fired_at    TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (job, slot)
        )""",
        """
        CREATE TABLE send_pace (
            name        TEXT COLLATE "C" PRIMARY KEY,
            next_at     DOUBLE PRECISION NOT NULL
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

LATEST = migrations.LATEST


def version(db: psycopg.Connection) -> int:
    """How many migrations ran: 0 for an empty database."""
    # pg_class read as a table, not to_regclass: a session that looked the name up before
    # may hold it in its catalog cache as missing, after another session has created it.
    found = db.execute(
        "SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = 'schema_version' AND n.nspname = current_schema())"
    ).fetchone()
    if not found or not found[0]:
        return 0
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(db: psycopg.Connection, to: int = LATEST) -> None:
    """Run the migrations ``db`` lacks, up to number ``to``, all in one transaction.

    ``db`` is in autocommit mode. The transaction first takes the migration lock and reads
    the version again (another instance may have run them). PostgreSQL's DDL is
    transactional, so another instance sees the database before or after, never half-way
    (a ``status`` opening it read-only while a ``send`` upgrades it)."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        at = version(db)
        if at >= to:
            return
        if at == 0:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            db.execute(
                "INSERT INTO schema_version SELECT 0 WHERE NOT EXISTS (SELECT FROM schema_version)"
            )
        for number, step in enumerate(MIGRATIONS[at:to], start=at + 1):
            step(db)
            db.execute("UPDATE schema_version SET version = %s", (number,))
