"""Hand-written fakes for the I/O edges, injected the way production wires the real ones."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from collections.abc import Iterable, Mapping

from newsletter.deliver import Events, Outcome
from newsletter.errors import FetchError
from newsletter.models import Outgoing, PaperData


class FakeSource:
    """Daily lists held in memory; ``down`` days raise like an unreachable site."""

    name = "fake"
    live = True

    def __init__(self, lists: Mapping[dt.date, list[PaperData]] | None = None) -> None:
        self.lists: dict[dt.date, list[PaperData]] = dict(lists or {})
        self.down: set[dt.date] = set()
        self.requests: list[dt.date] = []

    def fetch_day(self, day: dt.date) -> list[PaperData]:
        self.requests.append(day)
        if day in self.down:
            raise FetchError(f"fake://{day}", "connection failed")
        return list(self.lists.get(day, []))

    def latest_day(self, today: dt.date) -> dt.date | None:
        return max((d for d, ps in self.lists.items() if ps and d <= today), default=None)


class OutboxSender:
    """Appends every message to a list, and counts as a real delivery."""

    records_deliveries = True

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []
        self.closed = False

    def send_all(self, messages: Iterable[Outgoing], events: Events) -> None:
        for message in messages:
            events.started(message)
            self.sent.append(message)
            events.finished(message, Outcome("sent"))

    def close(self) -> None:
        self.closed = True

    def ids_for(self, recipient: str) -> list[list[str]]:
        return [list(m.email.paper_ids) for m in self.sent if m.recipient == recipient]

    def html(self, n: int) -> str:
        """The HTML body of the ``n``-th message, read from what was sent (its bytes)."""
        msg = email.message_from_bytes(self.sent[n].data, policy=email.policy.default)
        body = msg.get_body(("html",))
        assert body is not None
        return str(body.get_content())
