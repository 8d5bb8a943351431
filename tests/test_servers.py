"""The real test servers work: PostgreSQL (row locks, SKIP LOCKED, advisory locks, a password)."""

from __future__ import annotations

import psycopg
import pytest

from tests.servers.postgres import PASSWORD, Database

pytest_plugins = ["tests.servers.fixtures"]


def test_postgres_rows_claimed_with_skip_locked_go_to_one_worker(postgres_db: Database) -> None:
    with psycopg.connect(postgres_db.url, autocommit=True) as setup:
        setup.execute("CREATE TABLE jobs (id int PRIMARY KEY, owner text)")
        setup.execute("INSERT INTO jobs SELECT g, NULL FROM generate_series(1, 10) g")
    claim = "SELECT id FROM jobs ORDER BY id LIMIT 4 FOR UPDATE SKIP LOCKED"
    with psycopg.connect(postgres_db.url) as a, psycopg.connect(postgres_db.url) as b:
        first = [r[0] for r in a.execute(claim).fetchall()]  # a's transaction holds these
        second = [r[0] for r in b.execute(claim).fetchall()]
        assert first == [1, 2, 3, 4]
        assert second == [5, 6, 7, 8]  # skipped a's rows instead of waiting for them
        with pytest.raises(psycopg.errors.LockNotAvailable):
            b.execute("SELECT id FROM jobs WHERE id = 1 FOR UPDATE NOWAIT")
        b.rollback()
        a.commit()  # a's locks are released: b now gets the first rows
        assert [r[0] for r in b.execute(claim).fetchall()] == [1, 2, 3, 4]


def test_postgres_advisory_lock_is_held_by_one_session(postgres_db: Database) -> None:
    with (
        psycopg.connect(postgres_db.url, autocommit=True) as a,
        psycopg.connect(postgres_db.url, autocommit=True) as b,
    ):
        lock = "SELECT pg_try_advisory_lock(42)"
        assert a.execute(lock).fetchone() == (True,)
        assert b.execute(lock).fetchone() == (False,)
        a.execute("SELECT pg_advisory_unlock(42)")
        assert b.execute(lock).fetchone() == (True,)


def test_postgres_each_test_gets_an_empty_database(postgres_db: Database) -> None:
    # The other tests made a ``jobs`` table in their own database: not in this one.
    with psycopg.connect(postgres_db.url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
        assert conn.execute("SELECT current_user").fetchone() == ("newsletter",)


def test_postgres_password_role_needs_its_password(postgres_db: Database) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(postgres_db.password_url, connect_timeout=10).close()
    with psycopg.connect(postgres_db.password_url, password=PASSWORD) as conn:
        conn.execute("CREATE TABLE t (x int)")  # may write: a member of the database's owner
        assert conn.execute("SELECT current_user").fetchone() == ("newsletter_pw",)
