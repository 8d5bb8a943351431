"""Load: the seconds a send takes to read 100,000 readers from the store.

A state file with ``--subscribers`` active readers (the benchmark workload's topics and
settings, source ``web``) is written once; then, in a fresh connection each time, what a
run does before selecting: ``roster.load`` (the file's subscribers synced, every active
row read and turned into the ``Subscriber`` a run mails). Prints one JSON object.

    python -m bench.loadbench [--subscribers 100000] [--repeat 3] [--state FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import workload
from newsletter import roster
from newsletter.models import SubscriberRecord
from newsletter.store import SqliteStore
from newsletter.store.subscribers import _row

NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)


def fill(path: Path, count: int) -> None:
    """``count`` active readers, written in one transaction (the benchmark's, not a run's)."""
    topics = list(workload.topics())
    rows = []
    for i, sub in enumerate(workload.subscribers(count, topics)):
        record = SubscriberRecord.of(sub, status="active", source="web")
        record = dataclasses.replace(
            record,
            id=f"load{i:08d}",
            created_at=NOW,
            confirmed_at=NOW,
            updated_at=NOW,
            signup_client="203.0.113.9",
            confirm_client="203.0.113.9",
        )
        rows.append((*_row(record), record.key))
    with SqliteStore(path) as store:
        store.db.execute("BEGIN")
        store.db.executemany(
            "INSERT INTO subscribers(id, email, name, topics, cadence, max_papers, min_upvotes, "
            "timezone, send_at, keywords, exclude, sections, status, source, reason, created_at, "
            "confirmed_at, signup_client, confirm_client, updated_at, key) "
            f"VALUES ({','.join('?' * 21)})",
            rows,
        )
        store.db.execute("COMMIT")


def measure(path: Path, repeat: int) -> dict[str, Any]:
    """Wall and CPU seconds of each load (CPU: what a busy machine's other processes do not
    inflate)."""
    wall, cpu = [], []
    count = 0
    for _ in range(repeat):
        mailed: list[Any] = []  # the previous load's objects freed first, as in a real run
        start, start_cpu = time.perf_counter(), time.process_time()
        with SqliteStore(path) as store:
            mailed = roster.load(store, [], NOW).mailed
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        count = len(mailed)
        del mailed
    return {
        "loaded": count,
        "wall_seconds": [round(s, 3) for s in wall],
        "cpu_seconds": [round(s, 3) for s in cpu],
        "best_wall": round(min(wall), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--state", type=Path, help="keep the state file here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.state or Path(tmp) / "state.db"
        if not path.exists():
            fill(path, args.subscribers)
        result = measure(path, args.repeat)
    result["subscribers"] = args.subscribers
    print(json.dumps(result))


if __name__ == "__main__":
    main()
