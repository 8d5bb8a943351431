"""Readers held in the store: every digest selected and built, and thrown away, for 10,000,
100,000 and 1,000,000 of them; the time and the peak memory at each size.

For each size, a state file with that many active readers (``bench.loadbench.fill``: the
workload's subscribers) is written, not timed; then a child process does what a send does
before it hands messages to a sender, its RSS summed with its pool's (``bench.rss``):

    readers  = roster.load(store, [], now).mailed        every active row read
    matches  = the workload's 2,000 papers x the readers' topics
    for each reader: the window's start, sent and skipped papers read from the store
    select and compose every digest in the pool (bytes only), hash it, drop it

    python -m bench.storebench --subscribers 10000 --subscribers 100000 [--subscribers 1000000]

prints one JSON object per size. Needs readers in the store (issue 15); without them it
says so and exits 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import buildbench, workload
from bench.rss import measured


def missing() -> str | None:
    """Why readers cannot be held in the store here, or None."""
    try:
        from bench import loadbench  # noqa: F401 (the readers' fill)
        from newsletter import roster  # noqa: F401
    except ImportError:
        return "the store holds no readers yet (issue 15, branch readers): skipped"
    return None


def child(state: Path, workers: int) -> dict[str, Any]:
    """In the measured process: read, select, compose, discard."""
    from newsletter import compose, roster, selection
    from newsletter.models import NothingNew
    from newsletter.selection import Request, Selecting
    from newsletter.store import SqliteStore

    start = time.perf_counter()
    cpu = time.process_time()
    with SqliteStore(state) as store:
        readers = roster.load(store, [], workload.NOW).mailed
        loaded = time.perf_counter()
        w = workload.make(0)
        topics = selection.topics_for_run(w.topics, readers)
        matches = selection.match_topics(w.papers, topics)
        selecting = Selecting(matches, workload.NOW, workload.DAY)
        matched = time.perf_counter()

        def requests() -> Any:
            for sub in readers:
                last = store.last_digest_day(sub.key)
                since = selection.window_start(sub, workload.DAY, last, workload.WINDOW_DAYS)
                yield Request(sub, since, store.sent_ids(sub.key), store.skipped_ids(sub.key))

        sha = hashlib.sha256()
        messages = nothing = size = 0
        for found in compose.select_and_compose(
            buildbench.SPEC,
            selecting,
            requests(),
            count=len(readers),
            bodies=False,
            workers=workers,
        ):
            if isinstance(found, NothingNew):
                nothing += 1
                continue
            sha.update(found.data)
            messages += 1
            size += len(found.data)
    end = time.perf_counter()
    return {
        "readers": len(readers),
        "load_seconds": loaded - start,
        "match_seconds": matched - loaded,
        "seconds": end - start,
        "digests_per_s": messages / (end - start),
        "parent_cpu_seconds": time.process_time() - cpu,
        "messages": messages,
        "nothing_new": nothing,
        "bytes": size,
        "sha256": sha.hexdigest(),
    }


def one(subscribers: int, workers: int = 0) -> dict[str, Any]:
    from bench import loadbench

    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        state = Path(folder) / "newsletter.db"
        filled = time.perf_counter()
        loadbench.fill(state, subscribers)
        filled = time.perf_counter() - filled
        command = [sys.executable, "-m", "bench.storebench", "--child", str(state)]
        result = measured([*command, "--workers", str(workers)])
    result.update(subscribers=subscribers, fill_seconds=filled)
    return result


def run(sizes: list[int]) -> dict[str, Any]:
    why = missing()
    if why:
        print(f"store: {why}", flush=True)
        return {"runs": [], "skipped": [why]}
    runs = []
    for size in sizes:
        result = one(size)
        print("store", json.dumps(result), flush=True)
        runs.append(result)
    return {"runs": runs, "skipped": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, action="append")
    parser.add_argument("--workers", type=int, default=0, help="0: every core")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from newsletter.compose.pool import workers_for

        print(json.dumps(child(args.child, args.workers or workers_for(10**9))))
        return
    run(args.subscribers or [10_000, 100_000])


if __name__ == "__main__":
    main()
