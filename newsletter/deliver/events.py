"""What became of a message (``Outcome``) and how a sender tells it as it happens (``Events``).

The senders report through ``Events``; the ledger implements it for a real send (every
transition committed as it happens), the pipeline's tally for a preview.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from newsletter.models import Outgoing

Status = Literal["sent", "failed", "unknown", "pending", "deferred"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message. ``pending``: not handed over, try again in a later run;
    ``deferred``: a temporary failure (4xx) outlived this run's retries: later runs retry it."""

    status: Status
    detail: str = ""
    suppress: bool = False  # the address does not exist: never mail it again
    #: A 5xx to RCPT that does not condemn the address (mailbox full, disabled): counted as a
    #: bounce read back later is (``inbound.soft_bounces`` of them suppress it).
    refused: bool = False


class Events(Protocol):
    """What a sender reports as it goes. An ``Events`` may also have ``pace``, a callable
    giving the seconds to wait before the next message starts: a rate shared by several
    senders (the ledger's recorder on a shared state); the SMTP sender then uses it instead
    of its own ``rate_per_second``."""

    def started(self, message: Outgoing) -> None:
        """Called just before the message is committed to the server (for SMTP: its data is
        written but for the end mark): from here on the server may have it."""

    def retrying(self, message: Outgoing, detail: str) -> None:
        """After ``started``: the server refused it for now; it is not there, and is retried."""

    def finished(self, message: Outgoing, outcome: Outcome) -> None: ...
