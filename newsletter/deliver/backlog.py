"""The messages of one SMTP send, shared by the pool's connections (one event loop).

Fresh messages wait in line; one that met a temporary failure waits aside until its retry
time instead of holding its connection; once the send stops, every wait ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from newsletter.models import Outgoing

T = TypeVar("T")


@dataclass(slots=True, eq=False)
class Queued:
    """One message on its way, with the temporary failures it met in this send."""

    message: Outgoing
    failures: int = 0


class Backlog:
    """The messages of one send, shared by the pool's connections (one event loop).

    Fresh messages come from the producer, at most ``room`` held (one digest in memory per
    slot). A message that met a temporary failure waits here for its retry time instead of
    holding its connection. After ``halt()`` (or the sender's stop) every wait returns and
    nothing more is handed out: what was not taken stays pending.
    """

    def __init__(self, room: int, stop: threading.Event) -> None:
        self.room = room
        self.stop = stop
        self.fresh: deque[Queued] = deque()
        self.later: list[tuple[float, int, Queued]] = []  # (due, order, job): a heap
        self.taken = 0  # handed out and not yet done
        self.exhausted = False  # the producer has no more
        self.halted = False
        self._order = itertools.count()
        self._changed = asyncio.Event()

    @property
    def stopped(self) -> bool:
        return self.halted or self.stop.is_set()

    def wake(self) -> None:
        """Something changed: every waiter looks again."""
        self._changed.set()
        self._changed = asyncio.Event()

    def halt(self) -> None:
        self.halted = True
        self.wake()

    async def _wait(self, timeout: float | None) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)

    async def sleep(self, seconds: float) -> None:
        """Sleep, but no longer than until the send stops."""
        deadline = time.monotonic() + seconds
        while not self.stopped and (left := deadline - time.monotonic()) > 0:
            await self._wait(left)

    async def unless_stopped(self, work: Awaitable[T]) -> T | None:
        """``await work``, or cancel it and return None when the send stops first."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done() and not self.stopped:
                waiter = asyncio.ensure_future(self._changed.wait())
                try:
                    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
            return task.result() if task.done() else None
        finally:
            # Cancelled until it takes: Python 3.11's wait_for (inside aiosmtplib's connect)
            # swallows a cancel that meets the connection being made (gh-86296), and the
            # connect would then wait for a greeting for the whole connect_timeout.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
            if not task.cancelled():
                task.exception()  # retrieved: an error after the stop is not reported

    async def put(self, message: Outgoing) -> bool:
        """Add a fresh message when there is room; False if the send stopped meanwhile."""
        while len(self.fresh) >= self.room and not self.stopped:
            await self._wait(None)
        if self.stopped:
            return False
        self.fresh.append(Queued(message))
        self.wake()
        return True

    def close(self) -> None:
        self.exhausted = True
        self.wake()

    async def take(self) -> Queued | None:
        """The next message to send (a retry that is due first); None when all is done."""
        while not self.stopped:
            now = time.monotonic()
            if self.later and self.later[0][0] <= now:
                job = heapq.heappop(self.later)[2]
            elif self.fresh:
                job = self.fresh.popleft()
            elif self.exhausted and not self.later and not self.taken:
                return None
            else:
                await self._wait(self.later[0][0] - now if self.later else None)
                continue
            self.taken += 1
            self.wake()  # room for the producer
            return job
        return None

    def retry_later(self, job: Queued, delay: float) -> None:
        heapq.heappush(self.later, (time.monotonic() + delay, next(self._order), job))

    def give_back(self, job: Queued) -> None:
        """Not tried: first in line for another connection."""
        self.fresh.appendleft(job)

    def done(self) -> None:
        self.taken -= 1
        self.wake()
