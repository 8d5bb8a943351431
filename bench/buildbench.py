"""Build: complete MIME digests per second, the production path against a naive one.

The production path is what ``pipeline.run_once`` runs for a preview: ``selection.match_topics``
once, then ``compose.select_and_compose`` (select + render + message on a pool of processes,
which get the matches once), the messages without their HTML and text as an SMTP sender
asks for them (a real send selects in this process first, for its ledger). DKIM is off. Every message
is hashed (SHA-256 over all bytes, in order) and counted; ``--outbox DIR`` also writes them.
CPU per digest after matching is reported for this process and its pool apart: on a machine
with as many cores as workers, every microsecond the parent spends is one a worker lacks.

The naive baseline is the composer's reference path (``Composer(spec, reference=True)``): it
renders the same templates in full per message (cards and text blocks too, no caches), runs
premailer once per message, and serialises an ``email.message.EmailMessage`` per message.

    python -m bench.buildbench --subscribers 10000 [--workers 2] [--naive 300] [--outbox DIR]

prints one JSON object; ``python -m bench`` runs it in a child process to sample its memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import workload
from newsletter import compose, selection
from newsletter.compose.pool import workers_for
from newsletter.models import Digest, NothingNew, Subscriber
from newsletter.selection import Request, Selecting

MASTHEAD = compose.Masthead(
    title="Trending Papers",
    base_url="https://papers.example.org",
    from_header="Trending Papers <papers@example.org>",
    list_id="trending-papers.example.org",
    subject_template="{title}: {count} new papers for {date}",
)
KEY = b"benchmark-unsubscribe-key-0123456789"
SPEC = compose.ComposeSpec(templates_dir=None, masthead=MASTHEAD, key=KEY, now=workload.NOW)
SINCE = workload.DAY - dt.timedelta(days=workload.WINDOW_DAYS - 1)


def match(w: workload.Workload) -> selection.Matches:
    topics = selection.topics_for_run(w.topics, w.subscriber_models())
    return selection.match_topics(w.papers, topics)


def digests(matches: selection.Matches, subscribers: Iterator[Subscriber]) -> Iterator[Digest]:
    """Non-empty digests, as the pipeline sends them (nobody has been sent anything yet)."""
    for sub in subscribers:
        digest = selection.select(
            matches, sub, frozenset(), workload.NOW, day=workload.DAY, since=SINCE
        )
        if digest.picks:
            yield digest


class Output:
    """Hash, count and (optionally) write the messages, in order."""

    def __init__(self, outbox: Path | None) -> None:
        self.sha = hashlib.sha256()
        self.count = 0
        self.bytes = 0
        self.outbox = outbox
        if outbox:
            outbox.mkdir(parents=True, exist_ok=True)

    def add(self, data: bytes) -> None:
        self.sha.update(data)
        self.count += 1
        self.bytes += len(data)
        if self.outbox:
            (self.outbox / f"{self.count:06d}.eml").write_bytes(data)

    def summary(self) -> dict[str, Any]:
        return {"messages": self.count, "bytes": self.bytes, "sha256": self.sha.hexdigest()}


def fast(w: workload.Workload, workers: int, outbox: Path | None) -> dict[str, Any]:
    start = time.perf_counter()
    matches = match(w)
    matched = time.perf_counter()
    out = Output(outbox)
    first_at = 0.0
    # CPU seconds after matching: this process's, and its pool's (children, once joined).
    cpu = time.process_time()
    children = _children_cpu()
    nothing_new = 0
    selecting = Selecting(matches, workload.NOW, workload.DAY)
    requests = (Request(sub, SINCE) for sub in w.subscriber_models())
    # Only the bytes are hashed, as an SMTP sender only sends them: no bodies back.
    messages = compose.select_and_compose(
        SPEC, selecting, requests, count=w.subscribers, bodies=False, workers=workers
    )
    for msg in messages:
        if isinstance(msg, NothingNew):
            nothing_new += 1
            continue
        out.add(msg.data)
        if out.count == 1:
            first_at = time.perf_counter()
    end = time.perf_counter()
    cpu = time.process_time() - cpu
    children = _children_cpu() - children
    steady = (out.count - 1) / (end - first_at) if out.count > 1 else 0.0
    per_digest = 1e6 / max(1, out.count)
    return {
        "subscribers": w.subscribers,
        "papers": len(w.papers),
        "topics_in_run": len(matches.by_topic),
        "workers": workers,
        "seconds": end - start,
        "match_seconds": matched - start,
        "digests_per_s": out.count / (end - start),
        "steady_digests_per_s": steady,
        "first_message_seconds": first_at - matched,  # mostly starting the pool
        "nothing_new": nothing_new,
        "parent_cpu_us_per_digest": cpu * per_digest,
        "workers_cpu_us_per_digest": children * per_digest,
        **out.summary(),
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- the naive baseline ------------------------------------------------------------------


def naive(w: workload.Workload, sample: int) -> dict[str, Any]:
    """The first ``sample`` digests of the same workload, the naive way, in one process."""
    composer = compose.Composer(SPEC, reference=True)
    matches = match(w)
    matched = time.perf_counter()
    out = Output(None)
    for digest in digests(matches, w.subscriber_models()):
        out.add(composer.compose(digest).data)
        if out.count >= sample:
            break
    end = time.perf_counter()
    return {
        "subscribers": w.subscribers,
        "sample": out.count,
        "seconds": end - matched,
        "digests_per_s": out.count / (end - matched),
        **out.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--papers", type=int, default=2_000)
    parser.add_argument("--workers", type=int, default=0, help="0: every core")
    parser.add_argument("--naive", type=int, default=0, help="also time N digests the naive way")
    parser.add_argument("--outbox", type=Path, default=None)
    args = parser.parse_args()
    w = workload.make(args.subscribers, args.papers)
    workers = args.workers or workers_for(10**9)
    result: dict[str, Any] = {"fast": fast(w, workers, args.outbox)}
    if args.naive:
        result["naive"] = naive(w, args.naive)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
