from __future__ import annotations

import ast
import datetime as dt
import inspect
import re
import sqlite3
from pathlib import Path

import pytest

from newsletter import store as store_package
from newsletter.errors import StoreError
from newsletter.models import Digest, PaperData, Pick, Subscriber, SubscriberRecord
from newsletter.store import SqliteStore, Store, migrations, open_store

pytest_plugins = ["tests.servers.fixtures"]

NOW = dt.datetime(2026, 5, 8, 12, 0, tzinfo=dt.UTC)
DAY = dt.date(2026, 5, 8)


def paper(pid: str, upvotes: int = 1, day: dt.date = DAY, **kw: object) -> PaperData:
    return PaperData(id=pid, title=f"Paper {pid}", day=day, upvotes=upvotes, **kw)  # type: ignore[arg-type]


def test_created_on_first_use_with_all_migrations(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path) as store:
        assert store.created and store.schema_version == migrations.LATEST
    assert path.is_file()
    with SqliteStore(path) as store:  # reopening runs nothing again
        assert not store.created and store.schema_version == migrations.LATEST


def test_its_folder_is_never_created(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unable to open database file"):
        SqliteStore(tmp_path / "sub" / "state.db")
    assert not (tmp_path / "sub").exists()


def test_read_only_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path, read_only=True) as store:  # not there: an empty state
        assert list(store.subscribers()) == [] and not store.created
    assert list(tmp_path.iterdir()) == []
    with SqliteStore(path) as store:
        ada = SubscriberRecord("ada@example.org", ("t",), status="unsubscribed", reason="test")
        store.add_subscriber(ada, now=NOW)
    sqlite3.connect(path).execute("PRAGMA journal_mode=DELETE").fetchone()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="readonly"), SqliteStore(path, read_only=True) as store:
        (found,) = store.subscribers()
        assert (found.email, found.status, found.reason) == (
            "ada@example.org",
            "unsubscribed",
            "test",
        )
        store.set_subscriber_status(found.id, "active", "again", NOW)
    assert path.read_bytes() == before


def test_read_only_leaves_an_older_schema_to_a_command_that_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    migrations.migrate(sqlite3.connect(path, isolation_level=None), to=2)
    with pytest.raises(StoreError, match="older than this program's: `newsletter fetch`"):
        SqliteStore(path, read_only=True)
    with SqliteStore(path) as store:
        assert store.schema_version == migrations.LATEST


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {migrations.LATEST + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this program knows"):
        SqliteStore(path)


def test_not_a_database_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_text("this is not sqlite " * 100)
    with pytest.raises(StoreError, match=str(path)):
        SqliteStore(path)


def test_papers_round_trip_with_every_field(store_url: str) -> None:
    p = paper(
        "2605.00001",
        upvotes=7,
        authors=("A", "B"),
        ai_keywords=("x",),
        submitted_at=NOW,
        published_at=NOW - dt.timedelta(days=3),
        github_stars=3,
        organization="Lab",
    )
    with open_store(store_url) as store:
        store.add_papers([p], NOW)
        assert store.candidates([DAY]) == [p]


def test_candidates_by_day_and_latest_data_wins(store_url: str) -> None:
    with open_store(store_url) as store:
        store.add_papers([paper("a", 1), paper("b", 2, day=DAY - dt.timedelta(days=1))], NOW)
        store.add_papers([paper("a", 5)], NOW + dt.timedelta(hours=1))
        assert [(p.id, p.upvotes) for p in store.candidates([DAY])] == [("a", 5)]
        assert [p.id for p in store.candidates([DAY, DAY - dt.timedelta(days=1)])] == ["a", "b"]
        assert store.candidates([]) == []


def test_every_fetch_keeps_an_upvote_snapshot(store_url: str) -> None:
    with open_store(store_url) as store:
        store.add_papers([paper("a", 1)], NOW)
        store.add_papers([paper("a", 9)], NOW + dt.timedelta(hours=6))
        rows = store.db.execute(
            "SELECT upvotes FROM snapshots WHERE paper_id='a' ORDER BY fetched_at"
        ).fetchall()
        assert rows == [(1,), (9,)]


def digest_for(email: str, day: dt.date, ids: list[str], skipped: tuple[str, ...] = ()) -> Digest:
    sub = Subscriber(email=email, topics=("t",))
    picks = tuple(Pick(paper(pid), "t", "k", "title", "r") for pid in ids)
    return Digest(sub, day, picks, skipped_ids=skipped)


def sent(store: Store, digest: Digest) -> None:
    """``digest`` frozen in the run of its day and sent."""
    run_id = store.open_run(digest.day, NOW)
    store.freeze(run_id, [digest], NOW)
    store.finish(run_id, digest.subscriber.key, "sent", "250", NOW)


def test_deliveries_are_per_subscriber_and_case_insensitive(store_url: str) -> None:
    with open_store(store_url) as store:
        assert store.sent_ids("ada@example.org") == frozenset()
        assert store.last_digest_day("ada@example.org") is None
        sent(store, digest_for("Ada@Example.org", DAY, ["a", "b"]))
        assert store.sent_ids("ada@example.org") == {"a", "b"}
        assert store.sent_ids("bob@example.org") == frozenset()
        assert store.last_digest_day("ADA@example.org") == DAY


def test_skipped_papers_are_remembered_until_delivered(store_url: str) -> None:
    with open_store(store_url) as store:
        sent(store, digest_for("ada@example.org", DAY, ["a"], skipped=("b", "c")))
        assert store.skipped_ids("ada@example.org") == {"b", "c"}
        later = DAY + dt.timedelta(days=1)
        sent(store, digest_for("ada@example.org", later, ["b"]))
        assert store.skipped_ids("ada@example.org") == {"c"}
        assert store.last_digest_day("ada@example.org") == later


def test_trends_compare_the_newest_snapshot_with_one_half_a_day_older(store_url: str) -> None:
    with open_store(store_url) as store:
        store.add_papers([paper("a", 10), paper("b", 3)], NOW - dt.timedelta(hours=24))
        store.add_papers([paper("a", 30)], NOW - dt.timedelta(hours=2))
        store.add_papers([paper("a", 50)], NOW)
        trends = store.trends(["a", "b"])
        assert set(trends) == {"a"}  # one snapshot: no trend
        assert trends["a"].delta == 40 and trends["a"].hours == 24
        assert trends["a"].describe() == "+40 since yesterday"


def test_a_day_is_complete_once_fetched_after_it_ended(store_url: str) -> None:
    with open_store(store_url) as store:
        store.mark_fetched("hf", DAY, 3, NOW)  # during the day: its list may still grow
        store.mark_fetched("hf", DAY - dt.timedelta(days=1), 0, NOW)
        assert store.complete_days("hf", [DAY, DAY - dt.timedelta(days=1)]) == {
            DAY - dt.timedelta(days=1)
        }
        assert store.complete_days("other", [DAY - dt.timedelta(days=1)]) == set()


def test_frozen_digests_share_papers_read_once_per_run(store_url: str) -> None:
    with open_store(store_url) as store:
        store.add_papers([paper("a", 3), paper("b", 4)], NOW)
        run_id = store.open_run(DAY, NOW)
        digests = [digest_for(f"{n}@example.org", DAY, ["a", "b"]) for n in ("ada", "bob")]
        store.freeze(run_id, digests, NOW)
        rows = store.pending(run_id)
        cache: dict[str, PaperData] = {}
        first, second = (
            store.frozen_digest(r, d.subscriber, cache) for r, d in zip(rows, digests, strict=True)
        )
        assert first.paper_ids == second.paper_ids == ("a", "b")
        assert all(p.paper is q.paper for p, q in zip(first.picks, second.picks, strict=True))
        assert set(cache) == {"a", "b"}
        alone = store.frozen_digest(rows[0], digests[0].subscriber)  # no cache: read again
        assert alone.picks[0].paper == first.picks[0].paper


def test_a_runs_papers_are_those_of_its_frozen_digests(store_url: str) -> None:
    with open_store(store_url) as store:
        store.add_papers([paper("a", 3), paper("b", 4), paper("c", 5), paper("d", 6)], NOW)
        run_id = store.open_run(DAY, NOW)
        digests = [
            digest_for("ada@example.org", DAY, ["a", "b"]),
            digest_for("bob@example.org", DAY, ["b", "c"]),
        ]
        store.freeze(run_id, digests, NOW)
        papers = store.run_papers(run_id)
        assert sorted(papers) == ["a", "b", "c"]
        assert store.run_papers(run_id + 1) == {}
        # As the cache of frozen_digest: the digests use these very objects.
        rebuilt = store.frozen_digest(store.pending(run_id)[1], digests[1].subscriber, papers)
        assert [p.paper for p in rebuilt.picks] == [papers["b"], papers["c"]]
        assert all(p.paper is papers[p.paper.id] for p in rebuilt.picks)


def test_unfinished_lists_the_recipients_the_days_run_has_left(store_url: str) -> None:
    with open_store(store_url) as store:
        store.add_papers([paper("a")], NOW)
        run_id = store.open_run(DAY, NOW)
        names = ("ada", "bob", "cy", "dan", "eve")
        store.freeze(run_id, [digest_for(f"{n}@x.org", DAY, ["a"]) for n in names], NOW)
        store.finish(run_id, "ada@x.org", "sent", "250", NOW)
        store.finish(run_id, "bob@x.org", "deferred", "451", NOW)
        store.mark_sending(run_id, "cy@x.org", "<m>", NOW)
        store.finish(run_id, "eve@x.org", "failed", "550", NOW)
        assert store.unfinished(DAY) == {"bob@x.org", "cy@x.org", "dan@x.org"}
        assert store.unfinished(DAY + dt.timedelta(days=1)) == set()
        # A deferred row is sent again (and counted), and the run is not over while it waits.
        assert [(r.subscriber, r.deferrals) for r in store.pending(run_id)] == [
            ("bob@x.org", 1),
            ("dan@x.org", 0),
        ]
        store.close_run(run_id, NOW)
        assert store.db.execute("SELECT finished_at FROM runs").fetchone() == (None,)


def test_a_later_days_run_supersedes_deferred_rows_too(store_url: str) -> None:
    with open_store(store_url) as store:
        store.add_papers([paper("a")], NOW)
        run_id = store.open_run(DAY, NOW)
        store.freeze(run_id, [digest_for("ada@x.org", DAY, ["a"])], NOW)
        store.finish(run_id, "ada@x.org", "deferred", "451", NOW)
        assert store.supersede_before(DAY + dt.timedelta(days=1), NOW) == ["ada@x.org"]
        assert store.run_counts(run_id) == {"cancelled": 1}


def test_migration_6_keeps_the_ledger_and_its_order(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrations.migrate(db, to=5)
    db.execute("INSERT INTO runs(day, started_at) VALUES ('2026-05-08', 'x')")
    for who, status in (("zed", "sent"), ("amy", "pending"), ("kim", "unknown")):
        db.execute(
            "INSERT INTO ledger(run_id, subscriber, email, digest, papers, status, updated_at) "
            "VALUES (1, ?, ?, '{}', 1, ?, 'x')",
            (who, who, status),
        )
    db.close()
    with SqliteStore(path) as store:
        assert store.schema_version == migrations.LATEST
        rows = store.db.execute(
            "SELECT subscriber, status, deferrals FROM ledger ORDER BY rowid"
        ).fetchall()
        assert rows == [("zed", "sent", 0), ("amy", "pending", 0), ("kim", "unknown", 0)]
        store.finish(1, "amy", "deferred", "451", NOW)  # the new status is accepted
        assert store.run_counts(1)["deferred"] == 1


def test_a_write_that_fails_names_the_state_file_and_leaves_no_transaction_open(
    tmp_path: Path,
) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        ids = [f"2605.{i:05d}" for i in range(20)]
        store.add_papers([paper(pid) for pid in ids], NOW)
        run_id = store.open_run(DAY, NOW)
        names = [f"r{i}@x.org" for i in range(100)]
        store.freeze(run_id, [digest_for(n, DAY, ids) for n in names], NOW)
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StoreError) as caught:
            for name in names:
                store.finish(run_id, name, "sent", "250", NOW)
        assert str(caught.value).startswith(f"{tmp_path / 's.db'}: cannot record the outcome for ")
        assert str(caught.value).endswith(
            ": database or disk is full (free some space on its disk)"
        )
        assert not store.db.in_transaction
        store.db.execute(f"PRAGMA max_page_count = {pages * 10}")
        store.finish(run_id, names[-1], "sent", "250", NOW)  # the connection still works


# -- one protocol, ready for a second backend ---------------------------------------------

# What only SQLite has: how a file is opened, copied into memory and inspected.
SQLITE_ONLY = {"scratch", "created", "read_only", "schema_version", "path", "db"}
# What only PostgreSQL has: how a database is opened (``path`` is its URL without a password).
POSTGRES_ONLY = {"created", "read_only", "schema_version", "path", "url", "db"}


def public(cls: type) -> dict[str, inspect.Signature | None]:
    """Public attributes; methods with their signatures."""
    names = {n for n in dir(cls) if not n.startswith("_")} | set(
        getattr(cls, "__annotations__", {})
    )
    return {
        n: inspect.signature(getattr(cls, n)) if callable(getattr(cls, n, None)) else None
        for n in names
        if not n.startswith("_")
    }


def test_the_store_protocol_is_all_a_store_does_but_opening_a_file(store_url: str) -> None:
    with open_store(store_url) as store:
        api = public(type(store)) | {n: None for n in vars(store) if not n.startswith("_")}
    only = SQLITE_ONLY if isinstance(store, SqliteStore) else POSTGRES_ONLY
    protocol = public(Store)
    assert set(api) - only == set(protocol)
    for name, signature in protocol.items():
        assert api[name] == signature, name


def test_the_store_imports_models_and_errors_only() -> None:
    package = Path(store_package.__file__).parent
    imported = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
    ours = {m for m in imported if m.split(".")[0] == "newsletter"}
    others = {m for m in ours if m != "newsletter.store" and not m.startswith("newsletter.store.")}
    assert others <= {"newsletter.models", "newsletter.errors"}


def schema(db: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Each table's and index's columns: what a query can see of the schema."""
    names = db.execute(
        "SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
    ).fetchall()
    shape: dict[str, list[tuple[object, ...]]] = {}
    for kind, name, table in names:
        if kind == "table":
            shape[name] = db.execute(f"PRAGMA table_info({name})").fetchall()
            shape[f"{name} checks"] = [
                tuple(re.findall(r"CHECK \((.*?)\)\)", " ".join(sql.split())))
                for (sql,) in db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,))
            ]
        else:
            shape[name] = [table, *db.execute(f"PRAGMA index_info({name})").fetchall()]
    return shape


def test_migrations_are_named_functions_in_order() -> None:
    steps = migrations.MIGRATIONS
    assert migrations.LATEST == len(steps) >= 6
    assert len({step.__name__ for step in steps}) == len(steps)
    for number, step in enumerate(steps, start=1):
        assert step.__doc__ and step.__doc__.startswith(f"{number}: "), step.__name__


@pytest.mark.parametrize("start", range(migrations.LATEST))
def test_a_file_at_any_version_upgrades_to_the_schema_of_a_new_one(
    tmp_path: Path, start: int
) -> None:
    with SqliteStore(tmp_path / "new.db") as new:
        expected = schema(new.db)
    db = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    migrations.migrate(db, to=start)
    assert migrations.version(db) == start
    db.close()
    with SqliteStore(tmp_path / "old.db") as old:
        assert old.schema_version == migrations.LATEST
        assert schema(old.db) == expected


def test_a_migration_that_fails_leaves_the_file_at_the_version_before(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    migrations.migrate(db, to=3)
    db.execute("CREATE TABLE responses (x)")  # in the way of migration 4
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        migrations.migrate(db)
    assert migrations.version(db) == 3 and not db.in_transaction
    assert "error" not in {row[1] for row in db.execute("PRAGMA table_info(fetched_days)")}


def test_once_only_jobs_are_remembered_for_a_week(store_url: str) -> None:
    week_ago = NOW - dt.timedelta(days=7, minutes=5)
    with open_store(store_url) as a, open_store(store_url) as b:
        assert a.fire_once("poll", "then", week_ago)
        assert a.fire_once("send", "then", week_ago)
        assert not b.fire_once("poll", "then", NOW - dt.timedelta(days=6))  # still known
        assert b.fire_once("poll", "now", NOW)  # the poll a week ago is forgotten ...
        assert a.fire_once("poll", "then", NOW)
        assert not a.fire_once("send", "then", NOW)  # ... the send of then not yet
