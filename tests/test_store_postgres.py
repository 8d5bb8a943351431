"""What only PostgreSQL has: its migrations beside SQLite's, a database that cannot be reached,
and the sharing of a run between senders (claims, leases, the pace, once-only jobs)."""

from __future__ import annotations

import datetime as dt
import itertools
import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.errors import ClaimLost, StoreError
from newsletter.models import Digest, PaperData, Pick, Subscriber
from newsletter.store import SqliteStore, migrations, open_store, pg_migrations
from newsletter.store.postgres import PostgresStore
from tests.servers.postgres import PASSWORD, Database, PostgresCluster

pytest_plugins = ["tests.servers.fixtures"]

NOW = dt.datetime(2026, 5, 8, 12, tzinfo=dt.UTC)
DAY = dt.date(2026, 5, 8)
PAPER = PaperData(id="2605.00001", title="A paper", day=DAY, upvotes=3)


def freeze(store: PostgresStore | SqliteStore, n: int) -> tuple[int, list[str]]:
    store.add_papers([PAPER], NOW)
    run_id = store.open_run(DAY, NOW)
    keys = [f"r{i:03}@example.org" for i in range(n)]
    digests = [
        Digest(Subscriber(email=k, topics=("t",)), DAY, (Pick(PAPER, "t", "k", "title", "r"),))
        for k in keys
    ]
    store.freeze(run_id, digests, NOW)
    return run_id, keys


def pg_schema(url: str) -> dict[str, set[str]]:
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        ).fetchall()
    shape: dict[str, set[str]] = {}
    for table, column in rows:
        shape.setdefault(table, set()).add(column)
    return shape


def sqlite_schema(db: sqlite3.Connection) -> dict[str, set[str]]:
    names = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return {n: {r[1] for r in db.execute(f"PRAGMA table_info({n})")} for (n,) in names}


def test_the_migrations_are_sqlites_names_in_the_same_order() -> None:
    assert [m.__name__ for m in pg_migrations.MIGRATIONS] == [
        m.__name__ for m in migrations.MIGRATIONS
    ]
    for number, step in enumerate(pg_migrations.MIGRATIONS, start=1):
        assert step.__doc__ and step.__doc__.startswith(f"{number}: "), step.__name__


def test_both_backends_have_the_same_tables_and_columns(
    tmp_path: Path, postgres_db: Database
) -> None:
    with open_store(postgres_db.url) as store:
        assert store.created and store.schema_version == migrations.LATEST
    with open_store(postgres_db.url) as store:  # reopening runs nothing again
        assert not store.created
    with SqliteStore(tmp_path / "s.db") as lite:
        expected = sqlite_schema(lite.db)
    found = pg_schema(postgres_db.url)
    assert found.pop("schema_version") == {"version"}
    found["ledger"].remove("seq")  # SQLite's rowid
    found["subscribers"].remove("seq")
    assert found == expected


@pytest.mark.parametrize("start", [0, 3, migrations.LATEST - 1])
def test_a_database_at_an_older_version_upgrades_in_place(
    postgres_cluster: PostgresCluster, start: int
) -> None:
    fresh, old = postgres_cluster.create_database(), postgres_cluster.create_database()
    try:
        with open_store(fresh.url):
            pass
        with psycopg.connect(old.url, autocommit=True) as db:
            pg_migrations.migrate(db, to=start)
            assert pg_migrations.version(db) == start
        with open_store(old.url) as store:
            assert store.schema_version == migrations.LATEST
        assert pg_schema(old.url) == pg_schema(fresh.url)
    finally:
        postgres_cluster.drop_database(fresh.name)
        postgres_cluster.drop_database(old.name)


def test_a_database_that_cannot_be_opened_is_one_line_naming_it_without_its_password(
    postgres_db: Database, postgres_cluster: PostgresCluster
) -> None:
    wrong_password = postgres_db.password_url.replace("newsletter_pw@", "newsletter_pw:hunter2@")
    with pytest.raises(StoreError) as caught:
        open_store(wrong_password)
    message = str(caught.value)
    assert "hunter2" not in message and "\n" not in message
    assert message.startswith(f"{postgres_db.password_url}: cannot connect: ")
    assert "password authentication failed" in message
    missing = postgres_db.url.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(StoreError, match=f"^{missing}: cannot connect: .*does not exist"):
        open_store(missing)
    closed = f"postgresql://newsletter@127.0.0.1:{free_port()}/x"
    with pytest.raises(StoreError, match=f"^{closed}: cannot connect: .*refused"):
        open_store(closed)
    with open_store(postgres_db.password_url, password=PASSWORD) as store:
        assert store.schema_version == migrations.LATEST


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(tmp_path: Path, state: str, extra: str = "") -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"newsletter:\n  state: {state}\n{extra}"
        "topics:\n  t:\n    keywords: [x]\nsubscribers:\n  - email: a@example.org\n    topics: [t]\n",
        encoding="utf-8",
    )
    return path


def test_commands_name_the_url_and_exit_1_or_2(
    tmp_path: Path, postgres_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    missing = postgres_db.url.rsplit("/", 1)[0] + "/no_such_db"
    result = runner.invoke(cli, ["status", "-c", str(config(tmp_path, missing))])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"newsletter: {missing}: cannot connect: ")

    with_password = postgres_db.url.replace("newsletter@", "newsletter:hunter2@")
    cfg = config(tmp_path, with_password)
    result = runner.invoke(cli, ["status", "-c", str(cfg)])
    assert result.exit_code == 2 and "hunter2" not in result.output, result.output
    assert result.output.startswith(f"{cfg}:2: newsletter.state: the URL carries a password")
    result = runner.invoke(cli, ["status", "-c", str(config(tmp_path, "postgresql://h:port/d"))])
    assert result.exit_code == 2 and "newsletter.state: the URL's port is not a number" in (
        result.output
    )

    # The password from the variable newsletter.state_password_env names.
    extra = "  state_password_env: TEST_STATE_PW\n"
    cfg = config(tmp_path, postgres_db.password_url, extra)
    monkeypatch.setenv("TEST_STATE_PW", PASSWORD)
    result = runner.invoke(cli, ["fetch", "-c", str(cfg), "--from", str(tmp_path / "none.json")])
    assert "cannot connect" not in result.output, result.output
    result = runner.invoke(cli, ["status", "-c", str(cfg)])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("TEST_STATE_PW", "wrong")
    result = runner.invoke(cli, ["status", "-c", str(cfg)])
    assert result.exit_code == 1 and "password authentication failed" in result.output
    assert "wrong" not in result.output.replace("password authentication failed", "")


def test_claims_are_disjoint_and_skip_what_another_sender_is_claiming(
    postgres_db: Database,
) -> None:
    with open_store(postgres_db.url) as a, open_store(postgres_db.url) as b:
        run_id, keys = freeze(a, 10)
        kw = {"again": ("deferred",), "since": NOW, "lease_seconds": 60.0, "now": NOW}
        first, rows_a = a.claim(run_id, keys, limit=4, **kw)  # type: ignore[arg-type]
        second, rows_b = b.claim(run_id, keys, limit=4, **kw)  # type: ignore[arg-type]
        assert [r.subscriber for r in rows_a] == keys[:4]
        assert [r.subscriber for r in rows_b] == keys[4:8]
        assert a.claimed_unsent(run_id) == 8
        # Row locks held by an open claim are skipped, not waited for.
        with psycopg.connect(postgres_db.url) as c:
            c.execute("SELECT 1 FROM ledger WHERE subscriber = %s FOR UPDATE", (keys[8],))
            _, rows = b.claim(run_id, keys, limit=4, **kw)  # type: ignore[arg-type]
            assert [r.subscriber for r in rows] == [keys[9]]
        a.release_claim(first)
        _, rows = b.claim(run_id, keys, limit=None, **kw)  # type: ignore[arg-type]
        assert sorted(r.subscriber for r in rows) == sorted([*keys[:4], keys[8]])
        assert second


def test_a_lapsed_claim_goes_to_others_and_its_sender_stops(postgres_db: Database) -> None:
    with open_store(postgres_db.url) as dead, open_store(postgres_db.url) as live:
        run_id, keys = freeze(dead, 3)
        kw = {"again": (), "since": NOW, "limit": None, "now": NOW}
        claim_id, rows = dead.claim(run_id, keys, lease_seconds=0.2, **kw)  # type: ignore[arg-type]
        dead.mark_sending(run_id, keys[0], "<m0>", NOW, claim=claim_id)
        assert live.expire_claims(NOW) == []  # not yet lapsed
        time.sleep(0.5)
        assert live.expire_claims(NOW) == [keys[0]]  # in flight: the server may have it
        assert live.run_counts(run_id) == {"unknown": 1, "pending": 2}
        assert live.sent_ids(keys[0]) == {PAPER.id}  # unknown writes the sent-history
        _, rows = live.claim(run_id, keys, lease_seconds=60, **kw)  # type: ignore[arg-type]
        assert [r.subscriber for r in rows] == keys[1:]
        assert not dead.renew_claim(claim_id, 60, NOW)
        with pytest.raises(ClaimLost):
            dead.mark_sending(run_id, keys[1], "<m1>", NOW, claim=claim_id)


def test_the_pace_spaces_every_senders_messages(postgres_db: Database) -> None:
    with open_store(postgres_db.url) as a, open_store(postgres_db.url) as b:
        slots = []
        for store in (a, b, a, b, a, b):
            slots.append(time.time() + store.pace(0.2))
        gaps = [later - earlier for earlier, later in itertools.pairwise(slots)]
        assert all(gap > 0.15 for gap in gaps), gaps  # 0.2 s apart, whoever asked


def test_a_job_fires_once_per_slot_across_instances(postgres_db: Database) -> None:
    with open_store(postgres_db.url) as a, open_store(postgres_db.url) as b:
        assert a.fire_once("send", "2026-05-08T07:00", NOW)
        assert not b.fire_once("send", "2026-05-08T07:00", NOW)
        assert b.fire_once("send", "2026-05-09T07:00", NOW)
        assert a.fire_once("purge", "2026-05-08T07:00", NOW)


def test_instances_starting_together_on_an_empty_database_migrate_it_once(
    postgres_db: Database,
) -> None:
    errors: list[Exception] = []

    def start() -> None:
        try:
            open_store(postgres_db.url).close()
        except Exception as e:  # what the test reports
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    with open_store(postgres_db.url) as store:
        assert store.schema_version == migrations.LATEST


def test_an_empty_database_read_only_is_an_empty_state_and_stays_empty(
    postgres_db: Database,
) -> None:
    with open_store(postgres_db.url, read_only=True) as store:
        assert list(store.subscribers()) == [] and store.last_runs() == []
    with psycopg.connect(postgres_db.url) as db:
        assert pg_migrations.version(db) == 0  # nothing was created


def test_instances_adding_the_files_subscribers_together_add_each_once(
    postgres_db: Database,
) -> None:
    people = [Subscriber(email=f"r{i:03}@example.org", topics=("t",)) for i in range(200)]
    open_store(postgres_db.url).close()  # migrated: the race is the sync's, not the schema's
    errors: list[Exception] = []
    ids: list[set[str]] = []

    def start() -> None:
        try:
            with open_store(postgres_db.url) as store:
                ids.append({r.id for r in store.sync_file_subscribers(people, NOW).values()})
        except Exception as e:  # what the test reports
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    with open_store(postgres_db.url) as store:
        stored = {r.id for r in store.subscribers()}
    assert len(stored) == 200 and all(found == stored for found in ids)
