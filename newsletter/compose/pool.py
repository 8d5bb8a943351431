"""Digests -> Outgoing in bulk, in order, on every core: the compose stage's process pool.

``compose_many(spec, digests, count=n, bodies=...)`` streams digests through a ``Composer``:
with one process below ``POOL_THRESHOLD`` digests; with more, in a pool of processes that
each build their own Composer once, fed in chunks, with a bounded number of chunks in
flight, so memory stays flat however many subscribers there are and the messages come back
in the digests' order.

    for chunk of digests (at most 2 * workers chunks in flight):
        worker: [composer.compose(digest) for digest in chunk]                   (pure)
    yield each Outgoing in order

``select_and_compose(spec, selecting, requests, count=n, bodies=...)`` does the same from one
step earlier, for a run whose digests need not be kept (a preview, a test send): the workers
get the run's ``selection.Matches`` once at start and select too, so the parent only reads
each subscriber's history and passes it on.

    for chunk of requests (subscriber, since, sent_ids, skipped):
        worker: [selection.select(matches, ...) -> composed, or None: nothing new]  (pure)
    yield each Outgoing, or NothingNew, in order

Workers are started with "spawn": a fresh interpreter with only this package imported, not
a fork of a parent holding every subscriber and paper (smaller, and safe with threads).
Their log records are forwarded to the parent's handlers. A digest template that each
recipient's email is rendered from in full (``Composer.full_renders``) is logged once per
call, however many workers find it (``compose.full_render template=... reason=...``).

On a machine with as many cores as workers, each microsecond the parent spends per digest
is one a worker lacks, so what crosses goes in cheap forms (``wire``): the run's papers
(``papers=``) or matches go to each worker once at start; a digest goes out as tuples of
plain values that refer to the papers by number, a request as a few plain values; a message
comes back as a tuple of plain values, and without its HTML and text (``bodies=False``)
when the consumer only sends the bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import logging.handlers
import multiprocessing
import os
import pickle
import tempfile
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

from newsletter.compose import wire
from newsletter.compose.composer import Composer, ComposeSpec
from newsletter.models import Digest, NothingNew, Outgoing, PaperData, Subscriber
from newsletter.selection import Request, Selecting

log = logging.getLogger(__name__)

#: Below this many digests a pool costs more to start (about a second) than it saves.
POOL_THRESHOLD = 2_000
CHUNK = 32  # digests per task: enough to amortise a round trip; few, for memory

_C = TypeVar("_C")


def workers_for(count: int) -> int:
    """How many processes to compose ``count`` digests with: one until a pool pays off."""
    if count < POOL_THRESHOLD:
        return 1
    return max(1, len(os.sched_getaffinity(0)))


def compose_many(
    spec: ComposeSpec,
    digests: Iterable[Digest],
    *,
    count: int,
    bodies: bool,
    papers: Sequence[PaperData] = (),
    workers: int | None = None,
    chunk: int = CHUNK,
    composer: Callable[[], Composer] | None = None,
) -> Generator[Outgoing, None, None]:
    """Every digest composed, in order; lazily, holding at most ``2 * workers`` chunks.

    ``count``: how many digests there are, which chooses the number of processes
    (``workers``, when given, does instead). ``papers``: the run's papers, which the digests'
    picks (mostly) are; a pool's workers get them once, so a digest goes out with numbers
    instead of its papers. Any other paper object goes out whole, so this only changes what
    crosses to a worker, never the result. ``bodies=False``: the messages' ``email.html`` and
    ``email.text`` are empty (``data`` holds both), for a consumer that only sends the bytes;
    they are not carried back from a worker. ``composer``: gives the composer (for ``spec``)
    to compose with in this process, kept by a caller that composes batch after batch, so
    that its templates and rendered-once pieces are made once, not once a batch.
    """
    told = _Told()
    workers = workers_for(count) if workers is None else workers
    if workers <= 1:
        here = composer() if composer else Composer(spec)
        told.say(here.full_renders)
        for digest in digests:
            message = here.compose(digest)
            if len(here.full_renders) > len(told):
                told.say(here.full_renders)
            yield _bodies(message, bodies)
        return
    numbers = {id(p): i for i, p in enumerate(papers)}
    job = _Job(spec, tuple(papers), None, bodies)

    def payloads(source: Iterator[Digest]) -> Iterator[tuple[bytes, None]]:
        while batch := list(islice(source, chunk)):
            yield wire.pack_digests(batch, papers, numbers), None

    for wires, _ in _pooled(job, workers, _compose_chunk, payloads(iter(digests)), told):
        for found in wires:
            if found is None:  # a chunk of digests is composed in full
                raise RuntimeError("compose worker returned no message")
            yield wire.from_wire(found)


def select_and_compose(
    spec: ComposeSpec,
    selecting: Selecting,
    requests: Iterable[Request],
    *,
    count: int,
    bodies: bool,
    workers: int | None = None,
    chunk: int = CHUNK,
) -> Iterator[Outgoing | NothingNew]:
    """Select and compose each subscriber's digest, in the requests' order, lazily.

    The same as ``compose_many`` over ``selecting.select(...)`` of every request, with the
    digests without papers reported as ``NothingNew`` instead (unless ``send_empty``), but
    a pool's workers select too: they get ``selecting`` (the run's matches) once at start
    and each request goes out as a few plain values, so this process does neither the
    selection nor the pickling of digests.
    """
    told = _Told()
    workers = workers_for(count) if workers is None else workers
    if workers <= 1:
        here = Composer(spec)
        told.say(here.full_renders)
        for r in requests:
            digest = selecting.select(r.subscriber, r.since, r.sent_ids, r.skipped)
            if selecting.wanted(digest):
                message = here.compose(digest)
                if len(here.full_renders) > len(told):
                    told.say(here.full_renders)
                yield _bodies(message, bodies)
            else:
                yield NothingNew(r.subscriber, selecting.day)
        return
    job = _Job(spec, (), shipped(selecting), bodies)
    known = frozenset(selecting.matches.papers)

    def payloads(source: Iterator[Request]) -> Iterator[tuple[bytes, list[Subscriber]]]:
        while batch := list(islice(source, chunk)):
            yield wire.pack_requests(batch, known), [r.subscriber for r in batch]

    pooled = _pooled(job, workers, _select_chunk, payloads(iter(requests)), told)
    for wires, subscribers in pooled:
        for found, subscriber in zip(wires, subscribers, strict=True):
            yield NothingNew(subscriber, selecting.day) if found is None else wire.from_wire(found)


def shipped(selecting: Selecting) -> Selecting:
    """What a pool's workers get: without the ranked lists cached so far (each worker ranks
    what its subscribers need)."""
    return dataclasses.replace(selecting, matches=dataclasses.replace(selecting.matches, cache={}))


def _bodies(m: Outgoing, bodies: bool) -> Outgoing:
    """``m``, or ``m`` without its email's bodies: the same with one process as with a pool."""
    if bodies:
        return m
    return dataclasses.replace(m, email=dataclasses.replace(m.email, html="", text=""))


class _Told:
    """The digest templates logged as rendered in full, once per call whatever the workers."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __len__(self) -> int:
        return len(self.names)

    def say(self, reasons: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        items = reasons.items() if isinstance(reasons, Mapping) else reasons
        for name, reason in items:
            if name not in self.names:
                self.names.add(name)
                log.warning("compose.full_render template=%s reason=%s", name, reason)


@dataclass(frozen=True, slots=True)
class _Job:
    """What every worker gets once, at start."""

    spec: ComposeSpec
    papers: tuple[PaperData, ...]  # digests refer to these by number
    selecting: Selecting | None  # for select_and_compose
    bodies: bool


#: What a worker returns for a chunk: a message per item (None for "nothing new"), and the
#: digest templates it newly renders in full, with why.
_Result = tuple[list[wire.Wire | None], list[tuple[str, str]]]


def _pooled(
    job: _Job,
    workers: int,
    task: Callable[[bytes], _Result],
    payloads: Iterator[tuple[bytes, _C]],
    told: _Told,
) -> Iterator[tuple[list[wire.Wire | None], _C]]:
    """Each payload's result from a pool of ``workers`` started with ``job``, in order.

    Reads ``payloads`` lazily, at most ``2 * workers`` ahead; each comes with what the
    caller keeps to make sense of its result.
    """
    # The job (the matches can be a megabyte or two) is pickled once, into a file of our
    # own that each worker reads: as a start argument it would go down each new process's
    # pipe, and the parent would wait for one to boot before starting the next.
    fd, job_path = tempfile.mkstemp(prefix="newsletter-job-", suffix=".pickle")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(job, f, protocol=pickle.HIGHEST_PROTOCOL)
        for (wires, reasons), kept in _run_pool(job_path, workers, task, payloads):
            if reasons:
                told.say(reasons)
            yield wires, kept
    finally:
        os.unlink(job_path)


def _run_pool(
    job_path: str,
    workers: int,
    task: Callable[[bytes], _Result],
    payloads: Iterator[tuple[bytes, _C]],
) -> Iterator[tuple[_Result, _C]]:
    context = multiprocessing.get_context("spawn")
    records: Any = context.Queue()
    listener = logging.handlers.QueueListener(records, _Forward(), respect_handler_level=False)
    listener.start()
    pool = ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(job_path, records, _level()),
    )
    try:
        pending: deque[tuple[Future[_Result], _C]] = deque()
        while True:
            while len(pending) < 2 * workers:
                item = next(payloads, None)
                if item is None:
                    break
                payload, kept = item
                pending.append((pool.submit(task, payload), kept))
            if not pending:
                break
            future, kept = pending.popleft()
            yield future.result(), kept
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        listener.stop()
        records.close()


def _level() -> int:
    return logging.getLogger().getEffectiveLevel()


class _Forward(logging.Handler):
    """A worker's log record, handled by the parent's logger of the same name."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


@dataclass(slots=True)
class _Worker:
    """A worker process's state: its job and its composer, made once at start."""

    job: _Job
    composer: Composer
    told: set[str] = field(default_factory=set)  # full renders reported to the parent

    def news(self) -> list[tuple[str, str]]:
        """Full renders found since the last chunk."""
        found = self.composer.full_renders
        if len(found) == len(self.told):
            return []
        new = [(name, reason) for name, reason in found.items() if name not in self.told]
        self.told.update(name for name, _ in new)
        return new


_worker: _Worker | None = None  # in a worker process, set by _start_worker


def _start_worker(job_path: str, records: Any, level: int) -> None:
    global _worker
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(level)
    with open(job_path, "rb") as f:
        job: _Job = pickle.load(f)
    _worker = _Worker(job, Composer(job.spec))


def _this_worker() -> _Worker:
    if _worker is None:  # only _start_worker sets it; else a bug
        raise RuntimeError("compose worker was not initialised")
    return _worker


def _compose_chunk(payload: bytes) -> _Result:
    worker = _this_worker()
    job, composer = worker.job, worker.composer
    wires: list[wire.Wire | None] = [
        wire.to_wire(composer.compose(d), job.bodies)
        for d in wire.unpack_digests(payload, job.papers)
    ]
    return wires, worker.news()


def _select_chunk(payload: bytes) -> _Result:
    """Each request's message, or None for a digest with nothing new (not composed)."""
    worker = _this_worker()
    job, composer = worker.job, worker.composer
    selecting = job.selecting
    if selecting is None:
        raise RuntimeError("select worker was started without the run's matches")
    out: list[wire.Wire | None] = []
    for subscriber, since, sent_ids, skipped in wire.unpack_requests(payload):
        digest = selecting.select(subscriber, since, sent_ids, skipped)
        out.append(
            wire.to_wire(composer.compose(digest), job.bodies) if selecting.wanted(digest) else None
        )
    return out, worker.news()
