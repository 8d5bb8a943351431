"""Subscribers in the store (a real SQLite file): statuses, the upgrade from the state the
code before kept, the merge with the file's subscribers, removal, the sign-up counters."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from newsletter import roster
from newsletter.errors import SubscriberExistsError, SubscriberRemovedError
from newsletter.models import SUBSCRIBER_STATUSES, Subscriber, SubscriberRecord
from newsletter.store import SqliteStore, migrations, open_store
from newsletter.store.postgres import PostgresStore

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


pytest_plugins = ["tests.servers.fixtures"]


@pytest.fixture
def store(store_url: str) -> Iterator[SqliteStore | PostgresStore]:
    """The state on each backend in turn."""
    with open_store(store_url) as store:
        yield store


def reader(email: str = "ada@example.org", **fields: object) -> SubscriberRecord:
    fields.setdefault("topics", ("diffusion",))
    return SubscriberRecord(email, **fields)  # type: ignore[arg-type]


def test_a_record_round_trips_with_its_consent_record(store: SqliteStore) -> None:
    record = SubscriberRecord(
        "Ada@Example.org",
        ("diffusion", "robots"),
        name="Ada Lovelace",
        cadence="weekly",
        max_papers=5,
        min_upvotes=3,
        timezone="Europe/Paris",
        send_at=dt.time(7, 30),
        keywords=("mamba",),
        exclude=("survey",),
        sections=True,
        status="pending",
        source="web",
        signup_client="203.0.113.9",
    )
    stored = store.add_subscriber(record, now=NOW)
    assert len(stored.id) == 12 and "ada" not in stored.id.lower()
    assert stored.created_at == stored.updated_at == NOW
    assert store.subscriber_by_id(stored.id) == stored
    assert store.subscriber_by_email(" ADA@example.ORG ") == stored  # case-blind, trimmed
    assert store.subscriber_by_id("nobody") is None
    later = NOW + dt.timedelta(hours=1)
    confirmed = store.confirm_subscriber(stored.id, later, "198.51.100.7")
    assert confirmed is not None and confirmed.status == "active"
    assert (confirmed.confirmed_at, confirmed.confirm_client) == (later, "198.51.100.7")
    assert (confirmed.created_at, confirmed.signup_client) == (NOW, "203.0.113.9")
    # Confirming again (a second click) changes nothing.
    assert store.confirm_subscriber(stored.id, later + dt.timedelta(hours=1), "x") == confirmed


def test_ids_are_random_not_derived_from_the_address(tmp_path: Path) -> None:
    ids = set()
    for n in range(2):
        with SqliteStore(tmp_path / f"{n}.db") as store:
            ids.add(store.add_subscriber(reader(), now=NOW).id)
    assert len(ids) == 2


def test_a_duplicate_address_is_refused_clearly(store: SqliteStore) -> None:
    store.add_subscriber(reader(status="active"), now=NOW)
    with pytest.raises(SubscriberExistsError) as caught:
        store.add_subscriber(reader("ADA@example.org"), now=NOW)
    assert str(caught.value) == "ADA@example.org: already a subscriber (active)"


def test_every_status_and_only_those(store: SqliteStore) -> None:
    sid = store.add_subscriber(reader(), now=NOW).id
    for status in SUBSCRIBER_STATUSES:
        assert store.set_subscriber_status(sid, status, f"now {status}", NOW)
        found = store.subscriber_by_id(sid)
        assert found is not None and (found.status, found.reason) == (status, f"now {status}")
        assert [r.id for r in store.subscribers([status])] == [sid]
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        store.set_subscriber_status(sid, "asleep", "no such status", NOW)  # type: ignore[arg-type]
    assert not store.set_subscriber_status("nobody", "active", "", NOW)


def test_preferences_change_what_is_given_only(store: SqliteStore) -> None:
    sid = store.add_subscriber(reader(name="Ada", send_at=dt.time(8)), now=NOW).id
    later = NOW + dt.timedelta(days=1)
    changed = store.update_preferences(sid, topics=["robots"], cadence="weekly", now=later)
    assert changed is not None
    assert (changed.topics, changed.cadence, changed.max_papers) == (("robots",), "weekly", 10)
    assert (changed.name, changed.send_at, changed.updated_at) == ("Ada", dt.time(8), later)
    cleared = store.update_preferences(sid, send_at=None, name=None, max_papers=3, now=later)
    assert cleared is not None and (cleared.send_at, cleared.name, cleared.max_papers) == (
        None,
        None,
        3,
    )
    assert store.update_preferences("nobody", topics=["x"], now=later) is None


def test_unconfirmed_sign_ups_are_purged_after_the_window(store: SqliteStore) -> None:
    old = store.add_subscriber(reader("old@example.org"), now=NOW - dt.timedelta(hours=49))
    new = store.add_subscriber(reader("new@example.org"), now=NOW - dt.timedelta(hours=47))
    done = store.add_subscriber(
        reader("done@example.org", status="active"), now=NOW - dt.timedelta(days=9)
    )
    assert store.count_pending() == 2
    assert roster.purge(store, NOW, confirm_hours=48) == 1
    assert store.subscriber_by_id(old.id) is None
    assert store.subscriber_by_id(new.id) is not None
    assert store.subscriber_by_id(done.id) is not None
    assert store.count_pending() == 1


def test_removing_keeps_only_a_keyed_hash_and_blocks_adding_again_by_mistake(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path) as store:
        ada = store.add_subscriber(reader(status="active", name="Ada Lovelace"), now=NOW)
        sub = ada.subscriber()
        run_id = store.open_run(NOW.date(), NOW)
        from newsletter.models import Digest, PaperData, Pick

        paper = PaperData("2611.00001", "A paper", NOW.date())
        store.add_papers([paper], NOW)
        store.freeze(run_id, [Digest(sub, NOW.date(), (Pick(paper, "t", "k", "title", "r"),))], NOW)
        store.finish(run_id, sub.key, "sent", "250 OK", NOW)
        assert store.sent_ids(sub.key)
        assert store.remove_subscriber("ADA@example.org", NOW)
        assert store.subscriber_by_email("ada@example.org") is None
        assert store.sent_ids(sub.key) == frozenset() and store.last_digest_day(sub.key) is None
        assert store.is_removed("ada@example.org")
        with pytest.raises(SubscriberRemovedError, match="add it again only on purpose"):
            store.add_subscriber(reader(), now=NOW)
        # The operator adds them back on purpose: the removal is forgotten.
        again = store.add_subscriber(reader(), now=NOW, again=True)
        assert not store.is_removed("ada@example.org") and again.id != ada.id
        assert store.remove_subscriber("ada@example.org", NOW)
    # Nothing of the address is left in the file, in any table (the WAL checkpointed).
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        dump = "\n".join(db.iterdump()).casefold()
    assert "ada@example.org" not in dump and "lovelace" not in dump
    raw = path.read_bytes().lower()  # deleted rows are overwritten (secure_delete)
    assert b"ada@example.org" not in raw


def test_the_sign_up_counters_are_shared_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path) as one, SqliteStore(path) as two:
        for minutes in (0, 30, 90):
            one.record_signup_mail("Ada@example.org", NOW - dt.timedelta(minutes=minutes))
            two.record_signup_attempt("203.0.113.9", NOW - dt.timedelta(minutes=minutes))
        hour_ago = NOW - dt.timedelta(hours=1)
        assert two.signup_mail_since("ada@EXAMPLE.org", hour_ago) == 2
        assert one.signup_attempts_since("203.0.113.9", hour_ago) == 2
        assert one.signup_attempts_since("203.0.113.10", hour_ago) == 0
        assert one.forget_signup_limits(hour_ago) == 2
        assert two.signup_mail_since("ada@example.org", NOW - dt.timedelta(days=1)) == 2
    with sqlite3.connect(path) as db:
        dump = "\n".join(db.iterdump())
    assert "ada@" not in dump.casefold() and "203.0.113.9" not in dump  # keyed hashes only


# -- the upgrade from the state the code before kept -------------------------------------------


def test_an_older_state_file_upgrades_in_place(tmp_path: Path) -> None:
    """A file at schema 6 (what main kept before subscribers moved into the store): its
    subscriber states become rows, suppressed -> bounced, from the file (source config)."""
    path = tmp_path / "state.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrations.migrate(db, to=6)
    db.executemany(
        "INSERT INTO subscriber_state(subscriber, state, reason, changed_at) VALUES (?, ?, ?, ?)",
        [
            (
                "ada@example.org",
                "unsubscribed",
                "one-click unsubscribe",
                "2026-05-08T07:00:00+00:00",
            ),
            (
                "bob@example.org",
                "suppressed",
                "550 5.1.1 no such user",
                "2026-05-09T07:00:00+00:00",
            ),
        ],
    )
    db.execute(
        "INSERT INTO deliveries(subscriber, paper_id, digest_id, delivered_at) "
        "VALUES ('cy@example.org', '2605.00001', '2026-05-08/daily', '2026-05-08T07:00:00+00:00')"
    )
    db.close()
    with SqliteStore(path) as store:
        assert store.schema_version == migrations.LATEST
        rows = {r.key: r for r in store.subscribers()}
        assert {k: (r.status, r.reason, r.source) for k, r in rows.items()} == {
            "ada@example.org": ("unsubscribed", "one-click unsubscribe", "config"),
            "bob@example.org": ("bounced", "550 5.1.1 no such user", "config"),
        }
        assert rows["bob@example.org"].updated_at == dt.datetime(2026, 5, 9, 7, tzinfo=dt.UTC)
        assert store.sent_ids("cy@example.org") == {"2605.00001"}  # history kept
        # The file still lists them: Ada and Bob stay held, Cy is mailed with the file's topics.
        file_subs = [
            Subscriber(email, ("diffusion",))
            for email in ("Ada@example.org", "bob@example.org", "cy@example.org")
        ]
        who = roster.load(store, file_subs, NOW)
        assert [(s.email, status) for s, status in who.held] == [
            ("Ada@example.org", "unsubscribed"),
            ("bob@example.org", "bounced"),
        ]
        assert [s.email for s in who.mailed] == ["cy@example.org"]
        tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master")}
        assert "subscriber_state" not in tables


# -- the merge of the file's subscribers and the store's -------------------------------------


def file_sub(email: str, *topics: str, **fields: object) -> Subscriber:
    return Subscriber(email, topics or ("diffusion",), **fields)  # type: ignore[arg-type]


def test_the_file_and_the_store_merge(store: SqliteStore) -> None:
    web = store.add_subscriber(reader("web@example.org", status="active", source="web"), now=NOW)
    store.add_subscriber(reader("pending@example.org"), now=NOW)  # never mailed
    store.add_subscriber(reader("gone@example.org", status="unsubscribed", source="cli"), now=NOW)
    both = store.add_subscriber(
        reader("both@example.org", status="paused", source="web", topics=("web-topic",)), now=NOW
    )
    listed = [
        file_sub("File@example.org", "robots", cadence="weekly"),
        file_sub("both@example.org", "file-topic"),
    ]
    who = roster.load(store, listed, NOW)
    # The file's row is made on the first run, with an id; the file's settings.
    file_row = store.subscriber_by_email("file@example.org")
    assert file_row is not None and (file_row.source, file_row.status) == ("config", "active")
    assert [(s.email, s.topics, s.id) for s in who.mailed] == [
        ("File@example.org", ("robots",), file_row.id),
        ("web@example.org", ("diffusion",), web.id),
    ]
    # An address in both is the file's, but the status set from a page applies.
    assert [(s.email, s.topics, s.id, status) for s, status in who.held] == [
        ("both@example.org", ("file-topic",), both.id, "paused")
    ]
    # Resumed from the page: mailed, with the file's topics; the row keeps its own.
    store.set_subscriber_status(both.id, "active", "resumed", NOW)
    again = roster.load(store, listed, NOW)
    assert ("both@example.org", ("file-topic",)) in [(s.email, s.topics) for s in again.mailed]
    assert store.subscriber_by_id(both.id).topics == ("web-topic",)  # type: ignore[union-attr]
    # The same ids on every run: the links in earlier mail keep naming the same rows.
    assert [s.id for s in again.mailed] == [file_row.id, both.id, web.id][:1] + [
        s.id for s in again.mailed[1:]
    ]
    assert roster.load(store, listed, NOW).mailed == again.mailed


def test_a_config_row_follows_the_file_and_leaves_with_it(store: SqliteStore) -> None:
    roster.load(store, [file_sub("ada@example.org", "robots")], NOW)
    (row,) = store.subscribers()
    # The operator edits the file: the row follows (export shows what is mailed).
    roster.load(store, [file_sub("ada@example.org", "diffusion", max_papers=3)], NOW)
    (edited,) = store.subscribers()
    assert (edited.id, edited.topics, edited.max_papers) == (row.id, ("diffusion",), 3)
    # Taken out of the file: the row stays (its status, its history) but is nobody's.
    assert roster.load(store, [], NOW).mailed == []


def test_a_removed_address_left_in_the_file_is_not_mailed(store: SqliteStore) -> None:
    listed = [file_sub("ada@example.org")]
    roster.load(store, listed, NOW)
    store.remove_subscriber("ada@example.org", NOW)
    who = roster.load(store, listed, NOW)
    assert who.mailed == [] and [status for _, status in who.held] == ["removed"]
    assert store.subscriber_by_email("ada@example.org") is None  # not made again


def test_a_read_only_roster_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    with SqliteStore(path, read_only=True) as store:
        who = roster.load(store, [file_sub("ada@example.org")], NOW, write=False)
        assert [(s.email, s.id) for s in who.mailed] == [("ada@example.org", "")]
        assert list(store.subscribers()) == []


def test_a_record_is_the_subscriber_a_run_mails() -> None:
    record = reader(id="abc", cadence="weekly", keywords=("x",), send_at=dt.time(6))
    sub = record.subscriber()
    assert (
        dataclasses.astuple(SubscriberRecord.of(sub, status="active", source="cli"))[:12]
        == (dataclasses.astuple(record)[:12])
    )
    assert (sub.id, sub.cadence, sub.keywords, sub.send_at) == ("abc", "weekly", ("x",), dt.time(6))


def test_the_readers_a_run_reads_are_the_records_subscribers(store: SqliteStore) -> None:
    """``readers()`` (the fast read a send makes) is ``subscriber()`` of each active row
    that is not the file's, in order."""
    for i, status in enumerate(("active", "paused", "active", "pending", "active")):
        store.add_subscriber(
            reader(
                f"r{i}@example.org",
                status=status,
                topics=("a", f"t{i % 2}"),
                name=None if i % 2 else f"R{i}",
                send_at=dt.time(6, i) if i % 2 else None,
                keywords=("k",) * (i % 2),
                sections=bool(i % 2),
                cadence="weekly" if i == 4 else "daily",
            ),
            now=NOW,
        )
    roster.load(store, [file_sub("file@example.org")], NOW)  # a config row: not a reader
    expected = [r.subscriber() for r in store.subscribers(["active"]) if r.source != "config"]
    assert len(expected) == 3 and list(store.readers()) == expected


def test_adding_several_is_all_or_none(store: SqliteStore) -> None:
    store.add_subscriber(reader("old@example.org", status="active", source="cli"), now=NOW)
    batch = [reader("new@example.org", source="import"), reader("OLD@example.org", source="import")]
    with pytest.raises(SubscriberExistsError):
        store.add_subscribers(batch, now=NOW)
    assert [r.email for r in store.subscribers()] == ["old@example.org"]
    added = store.add_subscribers(batch[:1], now=NOW)
    assert [r.email for r in added] == ["new@example.org"] and added[0].id
    assert store.subscriber_by_email("new@example.org") == added[0]


def test_the_roster_version_changes_with_every_change_of_a_reader(store: SqliteStore) -> None:
    seen = [store.roster_version()]
    row = store.add_subscriber(reader(status="pending"), now=NOW)
    seen.append(store.roster_version())
    store.confirm_subscriber(row.id, NOW + dt.timedelta(minutes=1), None)
    seen.append(store.roster_version())
    store.set_subscriber_status(row.id, "paused", "by the reader", NOW + dt.timedelta(minutes=2))
    seen.append(store.roster_version())
    store.update_preferences(row.id, now=NOW + dt.timedelta(minutes=3), cadence="weekly")
    seen.append(store.roster_version())
    store.remove_subscriber(row.email, NOW + dt.timedelta(minutes=4))  # no row, no time
    seen.append(store.roster_version())
    assert len(set(seen[:-1])) == len(seen) - 1, seen  # each step changed it
    assert seen[0] == seen[-1] == (0, "")  # empty again


class _Racing(SqliteStore):
    """A store whose every write transaction lets another process sync the file first: the
    moment two `send`s starting together (one waiting for the other's lock) both add the
    file's new subscribers. ``_tx`` is the one hook between reading the rows and writing."""

    def __init__(self, path: Path, rival: SqliteStore, subs: list[Subscriber]) -> None:
        super().__init__(path)
        self.rival, self.subs = rival, subs

    def _tx(self):  # type: ignore[no-untyped-def]
        if self.subs:
            subs, self.subs = self.subs, []
            self.rival.sync_file_subscribers(subs, NOW)
        return super()._tx()


def test_two_processes_adding_the_files_subscribers_together_agree(tmp_path: Path) -> None:
    subs = [file_sub(f"r{i}@example.org") for i in range(3)]
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    with SqliteStore(path) as rival, _Racing(path, rival, subs) as racing:
        rows = racing.sync_file_subscribers(subs, NOW)  # raised "UNIQUE constraint failed"
        theirs = rival.sync_file_subscribers(subs, NOW)
    assert {k: r.id for k, r in rows.items()} == {k: r.id for k, r in theirs.items()}
    assert len(rows) == 3 and all(r.id for r in rows.values())
