"""The send's backlog: a stop ends a wait on the network even when a cancel is swallowed."""

from __future__ import annotations

import asyncio
import threading

from newsletter.deliver.backlog import Backlog


def test_a_stop_ends_work_that_swallows_the_first_cancel() -> None:
    """As Python 3.11's wait_for does inside aiosmtplib's connect when the connection is made
    just as the send stops (gh-86296): the connect went on to wait for a greeting for its
    whole connect_timeout, and a SIGTERM hung the send."""
    stop = threading.Event()
    steps: list[str] = []

    async def stubborn_connect() -> str:
        try:
            await asyncio.sleep(30)  # the TCP connect
        except asyncio.CancelledError:
            steps.append("cancel swallowed")
        try:
            await asyncio.sleep(3)  # the greeting that never comes
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise
        steps.append("waited for the greeting to the end")
        return "connection"

    async def main() -> str | None:
        backlog = Backlog(2, stop)
        asyncio.get_running_loop().call_later(0.05, lambda: (stop.set(), backlog.wake()))
        return await backlog.unless_stopped(stubborn_connect())

    assert asyncio.run(main()) is None
    assert steps == ["cancel swallowed", "cancelled"]
