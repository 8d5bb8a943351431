"""What a send of many subscribers holds in memory: no copy of what it holds already.

The figures are tracemalloc's (what Python allocated), not the process's size: the same on
every run, whatever else the machine does.
"""

from __future__ import annotations

import datetime as dt
import gc
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from newsletter import ledger
from newsletter.models import Digest, Subscriber
from newsletter.store import SqliteStore

DAY = dt.date(2026, 5, 8)
NOW = dt.datetime(2026, 5, 8, 7, tzinfo=dt.UTC)
COUNT = 2_000

_T = TypeVar("_T")


def _people(count: int = COUNT) -> list[Subscriber]:
    return [
        Subscriber(f"reader{i}@example.org", ("ml", "cv"), name=f"Reader {i}", keywords=("x",))
        for i in range(count)
    ]


def _peak(call: Callable[[], _T]) -> tuple[_T, int]:
    """What ``call`` returns, and the most it had allocated at once (bytes)."""
    gc.collect()
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def test_a_casefolded_address_is_its_own_key() -> None:
    ada = Subscriber("ada@example.org", ("ml",))
    assert ada.key is ada.email  # not a string of its own for each set the send keeps
    assert Subscriber("Ada@Example.org", ("ml",)).key == "ada@example.org"


def test_the_files_new_subscribers_are_written_a_row_at_a_time(tmp_path: Path) -> None:
    """A run's first sync of the file writes a row for each subscriber: not from a list of
    all the rows' values, nor reading every record back beside the ones it made (~1,590 B a
    subscriber at the peak with both, ~1,160 with the second, ~770 now, the records
    returned included)."""
    people = _people()
    with SqliteStore(tmp_path / "warm.db") as store:
        store.sync_file_subscribers(people[:10], NOW)  # imports and statements warmed up
    with SqliteStore(tmp_path / "state.db") as store:
        rows, peak = _peak(lambda: store.sync_file_subscribers(people, NOW))
        assert len(rows) == COUNT and all(r.id for r in rows.values())
        assert store.sync_file_subscribers(people, NOW) == rows  # as written
    assert peak / COUNT < 950, f"{peak / COUNT:.0f} bytes a subscriber at most"


def test_claimed_rows_hold_the_senders_strings(tmp_path: Path) -> None:
    """100,000 claimed rows held their key, address and status as copies (~19 MB)."""
    people = [*_people(3), Subscriber("Bob@Example.org", ("ml",))]
    keys = [s.key for s in people]
    with SqliteStore(tmp_path / "state.db") as store:
        run = ledger.open_run(store, DAY, lambda: NOW)
        run.freeze((Digest(s, DAY) for s in people), send_empty=True)
        _, rows = store.claim(
            run.id, keys, again=(), since=NOW, limit=None, lease_seconds=60, now=NOW
        )
    assert [r.subscriber for r in rows] == keys
    assert all(r.subscriber is key for r, key in zip(rows, keys, strict=True))
    assert all(r.email is r.subscriber for r in rows[:3])
    assert rows[3].email == "Bob@Example.org"
    assert all(r.status is sys.intern("pending") for r in rows)


def test_a_claim_makes_its_rows_as_it_reads_them(tmp_path: Path) -> None:
    """SQLite claims a run's rows at once: not from a list of every row's values first."""
    people = _people()
    with SqliteStore(tmp_path / "state.db") as store:
        run = ledger.open_run(store, DAY, lambda: NOW)
        run.freeze((Digest(s, DAY) for s in people), send_empty=True)
        keys = [s.key for s in people]
        (_, rows), peak = _peak(
            lambda: store.claim(
                run.id, keys, again=(), since=NOW, limit=None, lease_seconds=60, now=NOW
            )
        )
    assert [r.subscriber for r in rows] == keys
    assert peak / COUNT < 300, f"{peak / COUNT:.0f} bytes a row at most"  # ~490 then, ~150 now
