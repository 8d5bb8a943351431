"""A simulated clock for the scheduler and the daemon: time moves only when a test moves it."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable


class FakeClock:
    """``schedule.Clock`` in simulated time.

    ``advance`` moves it and wakes every waiter; ``run_until`` jumps from one waiter's
    deadline to the next (a discrete-event simulation), so a day of schedule passes in
    milliseconds while the work in between (a real fetch, a real SMTP send) takes the real
    time it takes: the clock never moves while the daemon's runner is busy.
    """

    def __init__(self, start: dt.datetime) -> None:
        self.now = start
        self.changed = threading.Condition()
        self.deadlines: dict[int, dt.datetime] = {}  # waiting thread -> when it wakes

    def __call__(self) -> dt.datetime:
        with self.changed:
            return self.now

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        me = threading.get_ident()
        with self.changed:
            until = None if seconds is None else self.now + dt.timedelta(seconds=seconds)
            if until is not None:
                self.deadlines[me] = until
            try:
                while not event.is_set():  # the event does not know this clock: polled
                    if until is not None and self.now >= until:
                        return False
                    self.changed.wait(0.005)
                return True
            finally:
                self.deadlines.pop(me, None)

    def advance(self, seconds: float) -> None:
        self.advance_to(self() + dt.timedelta(seconds=seconds))

    def advance_to(self, when: dt.datetime) -> None:
        with self.changed:
            if when > self.now:
                self.now = when
                self.changed.notify_all()

    def run_until(
        self,
        done: Callable[[], bool],
        *,
        limit: float,
        timeout: float = 60.0,
        explain: Callable[[], str] = lambda: "",
    ) -> None:
        """Move time to each next deadline a waiter has until ``done()``; fail past ``limit``
        simulated seconds, or ``timeout`` real ones (a hang guard)."""
        end = self() + dt.timedelta(seconds=limit)
        deadline = time.monotonic() + timeout
        while not done():
            if self() >= end or time.monotonic() > deadline:
                raise AssertionError(
                    f"not done at {self():%Y-%m-%d %H:%M:%S} (simulated; limit {limit:g} s)"
                    f"\n{explain()}"
                )
            with self.changed:
                soonest = min(self.deadlines.values(), default=None)
            if soonest is not None:
                self.advance_to(min(soonest, end))
            time.sleep(0.005)
