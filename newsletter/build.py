"""Digest -> Outgoing in bulk: the render and message stages, on every core.

``Composer`` is the two pure stages for one installation (templates, identity, From, the
unsubscribe key). ``compose_all(spec, digests, workers=n)`` streams digests through it:
with one worker in this process; with more, in a pool of processes that each build their
own Composer once, fed in chunks, with a bounded number of chunks in flight, so memory stays
flat however many subscribers there are and the messages come back in the digests' order.

    for chunk of digests (at most 2 * workers chunks in flight):
        worker: [message.build(render.render(digest, ...)) for digest in chunk]   (pure)
    yield each Outgoing in order

Workers are started with "spawn": a fresh interpreter with only this package imported, not
a fork of a parent holding every subscriber and paper (smaller, and safe with threads).
Their log records are forwarded to the parent's handlers.
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.handlers
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from newsletter import message, render, unsubscribe
from newsletter.models import Digest
from newsletter.store import digest_id

log = logging.getLogger(__name__)

#: Below this many digests a pool costs more to start (about a second) than it saves.
POOL_THRESHOLD = 2_000
CHUNK = 32  # digests per task: enough to amortise a round trip; few, for memory


@dataclass(frozen=True, slots=True)
class ComposeSpec:
    """What composing needs, picklable, so a worker process can build its own Composer."""

    templates_dir: Path | None
    identity: render.Identity
    sender: message.Sender
    key: bytes
    base_url: str
    now: dt.datetime


class Composer:
    """Digest -> Outgoing: the render and message stages with this installation's identity."""

    def __init__(self, spec: ComposeSpec) -> None:
        self.spec = spec
        self.env = render.make_env(spec.templates_dir)

    def unsubscribe_url(self, email: str) -> str:
        return f"{self.spec.base_url}/unsubscribe/{unsubscribe.make_token(self.spec.key, email)}"

    def compose(self, digest: Digest) -> message.Outgoing:
        sub = digest.subscriber
        url = self.unsubscribe_url(sub.email)
        email, html_parts = render.render_parts(
            digest, self.env, self.spec.identity, recipient_name=sub.name, unsubscribe_url=url
        )
        return message.build(
            email,
            self.spec.sender,
            unsubscribe_url=url,
            digest_key=digest_id(digest),
            now=self.spec.now,
            html_parts=html_parts,
        )


def workers_for(count: int) -> int:
    """How many processes to compose ``count`` digests with: one until a pool pays off."""
    if count < POOL_THRESHOLD:
        return 1
    return max(1, len(os.sched_getaffinity(0)))


def compose_all(
    spec: ComposeSpec, digests: Iterable[Digest], *, workers: int = 1, chunk: int = CHUNK
) -> Iterator[message.Outgoing]:
    """Every digest composed, in order; lazily, holding at most ``2 * workers`` chunks."""
    if workers <= 1:
        composer = Composer(spec)
        for digest in digests:
            yield composer.compose(digest)
        return
    context = multiprocessing.get_context("spawn")
    records: Any = context.Queue()
    listener = logging.handlers.QueueListener(records, _Forward(), respect_handler_level=False)
    listener.start()
    pool = ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(spec, records, logging.getLogger().getEffectiveLevel()),
    )
    try:
        pending: deque[Future[list[message.Outgoing]]] = deque()
        source = iter(digests)
        while True:
            while len(pending) < 2 * workers:
                batch = list(islice(source, chunk))
                if not batch:
                    break
                pending.append(pool.submit(_compose_chunk, batch))
            if not pending:
                break
            yield from pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        listener.stop()
        records.close()


class _Forward(logging.Handler):
    """A worker's log record, handled by the parent's logger of the same name."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


_composer: Composer | None = None


def _start_worker(spec: ComposeSpec, records: Any, level: int) -> None:
    global _composer
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(level)
    _composer = Composer(spec)


def _compose_chunk(digests: list[Digest]) -> list[message.Outgoing]:
    if _composer is None:  # only _start_worker sets it; a pool without it is a bug
        raise RuntimeError("compose worker was not initialised")
    return [_composer.compose(d) for d in digests]
