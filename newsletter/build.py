"""Digest -> Outgoing in bulk: the select, render and message stages, on every core.

``Composer`` is the two pure stages for one installation (templates, identity, From, the
unsubscribe key). ``compose_all(spec, digests, workers=n)`` streams digests through it:
with one worker in this process; with more, in a pool of processes that each build their
own Composer once, fed in chunks, with a bounded number of chunks in flight, so memory stays
flat however many subscribers there are and the messages come back in the digests' order.

    for chunk of digests (at most 2 * workers chunks in flight):
        worker: [message.build(render.render(digest, ...)) for digest in chunk]   (pure)
    yield each Outgoing in order

``select_and_compose(spec, selecting, requests, workers=n)`` does the same from one step
earlier, for a run whose digests need not be kept (a preview, a test send): the workers
get the run's ``selection.Matches`` once at start and select too, so the parent only reads
each subscriber's history and passes it on.

    for chunk of requests (subscriber, since, sent_ids, skipped):
        worker: [selection.select(matches, ...) -> composed, or None: nothing new]  (pure)
    yield each Outgoing, or NothingNew, in order

Workers are started with "spawn": a fresh interpreter with only this package imported, not
a fork of a parent holding every subscriber and paper (smaller, and safe with threads).
Their log records are forwarded to the parent's handlers.

On a machine with as many cores as workers, each microsecond the parent spends per digest
is one a worker lacks, so what crosses goes in cheap forms: the run's papers (``papers=``)
or matches go to each worker once at start; a digest goes out as tuples of plain values
that refer to the papers by number, a request as a few plain values; a message comes back
as a tuple of plain values, not as dataclasses, and without its HTML and text
(``bodies=False``) when the consumer only sends the bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import logging.handlers
import multiprocessing
import operator
import os
import pickle
import tempfile
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from newsletter import message, render, selection, unsubscribe
from newsletter.models import Digest, Email, PaperData, Pick, Subscriber, digest_id

log = logging.getLogger(__name__)

#: Below this many digests a pool costs more to start (about a second) than it saves.
POOL_THRESHOLD = 2_000
CHUNK = 32  # digests per task: enough to amortise a round trip; few, for memory

_C = TypeVar("_C")


@dataclass(frozen=True, slots=True)
class ComposeSpec:
    """What composing needs, picklable, so a worker process can build its own Composer."""

    templates_dir: Path | None
    identity: render.Identity
    sender: message.Sender
    key: bytes
    base_url: str
    now: dt.datetime
    #: A test send: both unsubscribe targets carry a test token, which unsubscribes no one.
    test_links: bool = False


class Composer:
    """Digest -> Outgoing: the render and message stages with this installation's identity."""

    def __init__(self, spec: ComposeSpec) -> None:
        self.spec = spec
        self.env = render.make_env(spec.templates_dir)

    def unsubscribe_url(self, email: str) -> str:
        return f"{self.spec.base_url}/unsubscribe/{self._token(email)}"

    def _token(self, email: str) -> str:
        return unsubscribe.make_token(self.spec.key, email, test=self.spec.test_links)

    def compose(self, digest: Digest) -> message.Outgoing:
        sub = digest.subscriber
        url = self.unsubscribe_url(sub.email)
        mailto_subject = (
            f"test unsubscribe {self._token(sub.email)}" if self.spec.test_links else "unsubscribe"
        )
        email, parts = render.render_parts(
            digest, self.env, self.spec.identity, recipient_name=sub.name, unsubscribe_url=url
        )
        return message.build(
            email,
            self.spec.sender,
            unsubscribe_url=url,
            digest_key=digest_id(digest),
            now=self.spec.now,
            html_parts=parts.html,
            text_parts=parts.text,
            mailto_subject=mailto_subject,
        )


def workers_for(count: int) -> int:
    """How many processes to compose ``count`` digests with: one until a pool pays off."""
    if count < POOL_THRESHOLD:
        return 1
    return max(1, len(os.sched_getaffinity(0)))


def compose_all(
    spec: ComposeSpec,
    digests: Iterable[Digest],
    *,
    workers: int = 1,
    chunk: int = CHUNK,
    papers: Sequence[PaperData] = (),
    bodies: bool = True,
    composer: Composer | None = None,
) -> Generator[message.Outgoing, None, None]:
    """Every digest composed, in order; lazily, holding at most ``2 * workers`` chunks.

    ``papers``: the run's papers, which the digests' picks (mostly) are; a pool's workers
    get them once, so a digest goes out with numbers instead of its papers. Any other paper
    object goes out whole, so this only changes what crosses to a worker, never the result.
    ``bodies=False``: the messages' ``email.html`` and ``email.text`` are empty (``data``
    holds both), for a consumer that only sends the bytes; they are not carried back from
    a worker. ``composer``: the one to use in this process when ``workers <= 1``.
    """
    if workers <= 1:
        here = composer or Composer(spec)
        for digest in digests:
            yield _bodies(here.compose(digest), bodies)
        return
    numbers = {id(p): i for i, p in enumerate(papers)}
    job = _Job(spec, tuple(papers), None, bodies)

    def payloads(source: Iterator[Digest]) -> Iterator[tuple[bytes, None]]:
        while batch := list(islice(source, chunk)):
            yield _dumps(batch, papers, numbers), None

    for wires, _ in _pooled(job, workers, _compose_chunk, payloads(iter(digests))):
        for wire in wires:
            if wire is None:  # a chunk of digests is composed in full
                raise RuntimeError("compose worker returned no message")
            yield _outgoing(wire)


@dataclass(frozen=True, slots=True)
class Selecting:
    """What ``selection.select`` needs once per run; a pool's workers get it once, at start."""

    matches: selection.Matches
    now: dt.datetime
    day: dt.date
    weights: selection.Weights = field(default_factory=selection.Weights)
    trending_count: int = 3
    send_empty: bool = False  # compose a digest without papers (else: ``NothingNew``)

    def select(
        self,
        subscriber: Subscriber,
        since: dt.date | None,
        sent_ids: frozenset[str],
        skipped: frozenset[str],
    ) -> Digest:
        return selection.select(
            self.matches,
            subscriber,
            sent_ids,
            self.now,
            day=self.day,
            since=since,
            skipped=skipped,
            weights=self.weights,
            trending_count=self.trending_count,
        )

    def wanted(self, digest: Digest) -> bool:
        return bool(digest.picks) or self.send_empty


@dataclass(frozen=True, slots=True)
class Request:
    """One subscriber's share of ``selection.select``'s arguments."""

    subscriber: Subscriber
    since: dt.date | None = None
    sent_ids: frozenset[str] = frozenset()
    skipped: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class NothingNew:
    """A subscriber whose digest has no papers: nothing composed (``send_empty`` is off)."""

    subscriber: Subscriber
    day: dt.date


def select_and_compose(
    spec: ComposeSpec,
    selecting: Selecting,
    requests: Iterable[Request],
    *,
    workers: int = 1,
    chunk: int = CHUNK,
    bodies: bool = True,
    composer: Composer | None = None,
) -> Iterator[message.Outgoing | NothingNew]:
    """Select and compose each subscriber's digest, in the requests' order, lazily.

    The same as ``compose_all`` over ``selecting.select(...)`` of every request, with the
    digests without papers reported as ``NothingNew`` instead (unless ``send_empty``), but
    a pool's workers select too: they get ``selecting`` (the run's matches) once at start
    and each request goes out as a few plain values, so this process does neither the
    selection nor the pickling of digests.
    """
    if workers <= 1:
        here = composer or Composer(spec)
        for r in requests:
            digest = selecting.select(r.subscriber, r.since, r.sent_ids, r.skipped)
            if selecting.wanted(digest):
                yield _bodies(here.compose(digest), bodies)
            else:
                yield NothingNew(r.subscriber, selecting.day)
        return
    # Ships without the ranked lists cached so far: each worker ranks what its subscribers need.
    job = _Job(spec, (), dataclasses.replace(selecting, matches=_bare(selecting.matches)), bodies)
    known = frozenset(selecting.matches.papers)

    def payloads(source: Iterator[Request]) -> Iterator[tuple[bytes, list[Subscriber]]]:
        while batch := list(islice(source, chunk)):
            yield _dump_requests(batch, known), [r.subscriber for r in batch]

    for wires, subscribers in _pooled(job, workers, _select_chunk, payloads(iter(requests))):
        for wire, subscriber in zip(wires, subscribers, strict=True):
            yield NothingNew(subscriber, selecting.day) if wire is None else _outgoing(wire)


def _bare(matches: selection.Matches) -> selection.Matches:
    return dataclasses.replace(matches, cache={})


def _bodies(m: message.Outgoing, bodies: bool) -> message.Outgoing:
    """``m``, or ``m`` without its email's bodies: the same with one process as with a pool."""
    if bodies:
        return m
    return dataclasses.replace(m, email=dataclasses.replace(m.email, html="", text=""))


@dataclass(frozen=True, slots=True)
class _Job:
    """What every worker gets once, at start."""

    spec: ComposeSpec
    papers: tuple[PaperData, ...]  # digests refer to these by number
    selecting: Selecting | None  # for select_and_compose
    bodies: bool


def _pooled(
    job: _Job, workers: int, task: _Task, payloads: Iterator[tuple[bytes, _C]]
) -> Iterator[tuple[list[_Wire | None], _C]]:
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
        yield from _run_pool(job_path, workers, task, payloads)
    finally:
        os.unlink(job_path)


def _run_pool(
    job_path: str, workers: int, task: _Task, payloads: Iterator[tuple[bytes, _C]]
) -> Iterator[tuple[list[_Wire | None], _C]]:
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
        pending: deque[tuple[Future[list[_Wire | None]], _C]] = deque()
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


# A digest goes out as plain values, which pickle (and unpickle) in a fraction of the time
# of the dataclasses: the Subscriber's fields, the day, each Pick's fields with its paper
# as a number in the run's table (or whole, if not in it), the skipped ids.
_DIGEST_FIELDS = ("subscriber", "day", "picks", "skipped_ids")  # what _lean_digest carries
_subscriber_values = operator.attrgetter(*(f.name for f in dataclasses.fields(Subscriber)))
_pick_values = operator.attrgetter(*(f.name for f in dataclasses.fields(Pick)))  # paper first
_LeanDigest = tuple[tuple[Any, ...], dt.date, tuple[tuple[Any, ...], ...], tuple[str, ...]]


def _lean_digest(d: Digest, papers: Sequence[PaperData], numbers: dict[int, int]) -> _LeanDigest:
    picks = []
    for pick in d.picks:
        values = _pick_values(pick)
        i = numbers.get(id(pick.paper))
        if i is not None and papers[i] is pick.paper:  # the table keeps the ids alive
            values = (i, *values[1:])
        picks.append(values)
    return _subscriber_values(d.subscriber), d.day, tuple(picks), d.skipped_ids


def _digest(lean: _LeanDigest) -> Digest:
    subscriber, day, picks, skipped = lean
    return Digest(
        Subscriber(*subscriber),
        day,
        tuple(Pick(_papers[v[0]] if type(v[0]) is int else v[0], *v[1:]) for v in picks),
        skipped,
    )


def _dumps(batch: list[Digest], papers: Sequence[PaperData], numbers: dict[int, int]) -> bytes:
    lean = [_lean_digest(d, papers, numbers) for d in batch]
    return pickle.dumps(lean, protocol=pickle.HIGHEST_PROTOCOL)


def _loads(payload: bytes) -> list[Digest]:
    return [_digest(lean) for lean in pickle.loads(payload)]


#: A Request as plain values: the Subscriber's fields, since, sent_ids, skipped.
_LeanRequest = tuple[tuple[Any, ...], dt.date | None, frozenset[str], frozenset[str]]


def _dump_requests(batch: list[Request], known: frozenset[str]) -> bytes:
    # ``select`` only asks whether a paper of the run is in sent_ids or skipped: the rest
    # of a long sent-history need not cross (& walks the smaller of the two sets).
    lean: list[_LeanRequest] = [
        (_subscriber_values(r.subscriber), r.since, r.sent_ids & known, r.skipped & known)
        for r in batch
    ]
    return pickle.dumps(lean, protocol=pickle.HIGHEST_PROTOCOL)


#: An Outgoing as plain values, which pickle in a fraction of the time of the dataclasses:
#: recipient, envelope_from, message_id, data, then the Email's fields in order.
_Wire = tuple[
    str, str, str, bytes, str, str | None, str, str, str, tuple[str, ...], tuple[str, ...]
]


#: What a worker runs on a chunk: a message per item, or None for "nothing new".
_Task = Callable[[bytes], list[_Wire | None]]


def _wire(m: message.Outgoing, bodies: bool) -> _Wire:
    e = m.email
    return (
        m.recipient,
        m.envelope_from,
        m.message_id,
        m.data,
        e.to,
        e.to_name,
        e.subject,
        e.html if bodies else "",  # most of what would cross back, and decoding it
        e.text if bodies else "",
        e.paper_ids,
        e.dropped_ids,
    )


def _outgoing(w: _Wire) -> message.Outgoing:
    return message.Outgoing(w[0], w[1], w[2], w[3], Email(*w[4:]))


_composer: Composer | None = None
_job: _Job | None = None
_papers: tuple[PaperData, ...] = ()


def _start_worker(job_path: str, records: Any, level: int) -> None:
    global _composer, _job, _papers
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(level)
    with open(job_path, "rb") as f:
        _job = pickle.load(f)
    _composer = Composer(_job.spec)
    _papers = _job.papers


def _worker() -> tuple[_Job, Composer]:
    if _job is None or _composer is None:  # only _start_worker sets them; else a bug
        raise RuntimeError("compose worker was not initialised")
    return _job, _composer


def _compose_chunk(payload: bytes) -> list[_Wire | None]:
    job, composer = _worker()
    return [_wire(composer.compose(d), job.bodies) for d in _loads(payload)]


def _select_chunk(payload: bytes) -> list[_Wire | None]:
    """Each request's message, or None for a digest with nothing new (not composed)."""
    job, composer = _worker()
    selecting = job.selecting
    if selecting is None:
        raise RuntimeError("select worker was started without the run's matches")
    lean: list[_LeanRequest] = pickle.loads(payload)
    out: list[_Wire | None] = []
    for subscriber, since, sent_ids, skipped in lean:
        digest = selecting.select(Subscriber(*subscriber), since, sent_ids, skipped)
        out.append(
            _wire(composer.compose(digest), job.bodies) if selecting.wanted(digest) else None
        )
    return out
