"""A send of 100,000 frozen digests does not hold them all: the freeze reads the digests a
chunk at a time (each chunk its own transaction), and the rows to send come without their
JSON, which is read when each is sent (and kept parsed until its outcome is recorded).
On both backends (``store_url``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

import pytest

from newsletter.models import Digest, LedgerRow, Pick, Subscriber
from newsletter.store import SqliteStore, Store, ledger_rows, open_store
from newsletter.store.postgres import PostgresStore
from tests.test_store import DAY, NOW, paper

pytest_plugins = ["tests.servers.fixtures"]


def digest(n: int) -> Digest:
    sub = Subscriber(email=f"reader{n}@example.org", topics=("t",))
    return Digest(sub, DAY, (Pick(paper("a", 3), "t", "kw", "title", "because"),))


def committed(store_url: str) -> int:
    """Rows another connection sees: what the freeze has committed so far."""
    with open_store(store_url) as other:
        return int(other._exec("SELECT COUNT(*) FROM ledger").fetchone()[0])


def test_a_freeze_commits_chunk_by_chunk_as_it_reads_the_digests(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_rows, "FREEZE_CHUNK", 3)
    seen: list[tuple[int, int]] = []  # (digests read so far, rows committed then)
    with open_store(store_url) as store:
        store.add_papers([paper("a", 3)], NOW)
        run_id = store.open_run(DAY, NOW)

        def digests() -> Iterator[Digest]:
            for n in range(8):
                seen.append((n, committed(store_url)))
                yield digest(n)

        assert store.freeze(run_id, digests(), NOW) == 8
        # Selected lazily: the 4th digest is read after the first 3 are committed.
        assert seen == [(0, 0), (1, 0), (2, 0), (3, 3), (4, 3), (5, 3), (6, 6), (7, 6)]
        assert store.freeze(run_id, iter([digest(1), digest(9)]), NOW) == 1  # 1 is there
        rows = store.pending(run_id)
        assert [r.email for r in rows] == [f"reader{n}@example.org" for n in [*range(8), 9]]


def frozen_run(
    store: SqliteStore | PostgresStore, count: int
) -> tuple[int, list[Digest], list[LedgerRow]]:
    """A run with ``count`` digests frozen: its id, the digests, the rows to send."""
    store.add_papers([paper("a", 3)], NOW)
    run_id = store.open_run(DAY, NOW)
    frozen = [digest(n) for n in range(count)]
    store.freeze(run_id, frozen, NOW)
    return run_id, frozen, store.pending(run_id)


def claimed(store: Store, run_id: int, keys: list[str]) -> list[LedgerRow]:
    _, rows = store.claim(run_id, keys, again=(), since=NOW, limit=None, lease_seconds=60, now=NOW)
    return rows


def test_rows_to_send_carry_no_json_and_each_digest_is_read_when_it_is_sent(
    store_url: str,
) -> None:
    with open_store(store_url) as store:
        run_id, frozen, rows = frozen_run(store, 3)
        assert [r.digest for r in rows] == ["", "", ""]
        batch = claimed(store, run_id, [d.subscriber.key for d in frozen])
        assert [(r.subscriber, r.digest) for r in batch] == [(r.subscriber, "") for r in rows]
        rebuilt = [store.frozen_digest(r, d.subscriber) for r, d in zip(batch, frozen, strict=True)]
        assert [d.paper_ids for d in rebuilt] == [("a",)] * 3
        assert rebuilt[2].picks[0].reason == "because" and rebuilt[2].day == DAY
        with pytest.raises(KeyError):  # no such row
            store.frozen_digest(dataclasses.replace(rows[1], run_id=999), frozen[1].subscriber)


def test_a_digest_read_to_be_sent_is_not_read_again_for_its_outcome(store_url: str) -> None:
    """finish() writes the sent-history from the digest frozen_digest parsed for the send:
    a row's JSON changed behind its back after it was read is not what it records."""
    with open_store(store_url) as store:
        run_id, frozen, rows = frozen_run(store, 2)
        store.frozen_digest(rows[0], frozen[0].subscriber)
        nothing = f'{{"day":"{DAY.isoformat()}","digest_id":"x","picks":[],"skipped":[]}}'
        with open_store(store_url) as other, other._tx():
            other._exec("UPDATE ledger SET digest = ?", (nothing,))
        later = NOW + dt.timedelta(minutes=1)
        store.finish(run_id, rows[0].subscriber, "sent", "250", later)
        store.finish(run_id, rows[1].subscriber, "sent", "250", later)  # not read to be sent
        assert store.sent_ids(rows[0].subscriber) == {"a"}  # as it was read for the send
        assert store.sent_ids(rows[1].subscriber) == frozenset()  # read now: no picks
