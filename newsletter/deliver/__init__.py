"""Delivery: finished messages out of the program, each outcome told as it happens.

    sender.send_all(messages, events)    SmtpSender: over SMTP (smtp.py; replies.py says
                                         what each reply means); PreviewSender: to a folder
      events.started(message)            the server may have it from here on
      events.finished(message, outcome)  sent, failed, unknown, deferred or pending
    sender.close()

A sender takes messages already composed (``message.data`` is what goes out) and knows
nothing of composing them; the ledger (a real send) or the pipeline's tally (a preview)
implements ``Events``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from newsletter.deliver.events import Events, Outcome, Status
from newsletter.deliver.preview import PreviewSender
from newsletter.deliver.replies import SmtpStatus
from newsletter.deliver.smtp import SendAborted, SmtpSender, SmtpSettings, default_helo_name
from newsletter.models import Outgoing


class Sender(Protocol):
    #: Whether delivering means a subscriber received it (so it is recorded as sent).
    records_deliveries: bool

    def send_all(self, messages: Iterable[Outgoing], events: Events) -> None:
        """Deliver every message, reporting each through ``events``; raise SendAborted to stop."""

    def close(self) -> None: ...


__all__ = [
    "Events",
    "Outcome",
    "PreviewSender",
    "SendAborted",
    "Sender",
    "SmtpSender",
    "SmtpSettings",
    "SmtpStatus",
    "Status",
    "default_helo_name",
]
