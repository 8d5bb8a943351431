"""Frozen dataclasses passed between the stages.

What a source produces is ``PaperData`` (what comes in); the stages after the store work on
the same shape, read back from the store, so a paper looks the same wherever it travels.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Cadence = Literal["daily", "weekly"]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True)
class PaperData:
    """One paper as a source reported it on one daily list."""

    id: str  # arXiv id without version suffix, e.g. "2405.15738"
    title: str
    day: dt.date  # the daily list (UTC date) the paper appeared on
    abstract: str = ""
    authors: tuple[str, ...] = ()
    upvotes: int = 0
    comments: int = 0
    published_at: dt.datetime | None = None  # on arXiv
    submitted_at: dt.datetime | None = None  # to the daily list
    thumbnail: str | None = None
    github_repo: str | None = None
    github_stars: int | None = None
    project_page: str | None = None
    organization: str | None = None
    ai_summary: str | None = None
    ai_keywords: tuple[str, ...] = ()
    source: str = "huggingface"
    categories: tuple[str, ...] = ()  # arXiv categories, the primary one first
    arxiv_comment: str | None = None  # the author's arXiv comment ("12 pages, 3 figures")

    @property
    def hf_url(self) -> str:
        return f"https://huggingface.co/papers/{self.id}"

    @property
    def arxiv_url(self) -> str:
        return f"https://arxiv.org/abs/{self.id}"

    @property
    def pdf_url(self) -> str:
        return f"https://arxiv.org/pdf/{self.id}"


@dataclass(frozen=True, slots=True)
class Topic:
    """What an operator defined under ``topics``; a paper matches on any of its criteria."""

    name: str
    keywords: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    organizations: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    display_name: str | None = None  # what the email calls it (section headings); None: name


@dataclass(frozen=True, slots=True)
class Subscriber:
    email: str
    topics: tuple[str, ...]
    name: str | None = None
    cadence: Cadence = "daily"
    max_papers: int = 10
    min_upvotes: int = 0
    timezone: str = "UTC"
    keywords: tuple[str, ...] = ()  # the subscriber's own, on top of their topics
    exclude: tuple[str, ...] = ()  # vetoes a paper in any of their topics
    sections: bool = False  # group the digest by topic
    send_at: dt.time | None = None  # local time of day; None: schedule.daily_at
    #: The opaque id of the subscriber's row in the store (``SubscriberRecord.id``): the
    #: manage and unsubscribe links carry it, never the address. "" outside a run.
    id: str = ""

    @property
    def key(self) -> str:
        """Identity: the address, compared case-insensitively."""
        key = self.email.casefold()
        # The address itself when it is casefolded already (most are): the keys a send
        # holds (roster, ledger, claims: ~4 of 100,000 each) are then no strings of their own.
        return self.email if key == self.email else key


@dataclass(frozen=True, slots=True)
class Pick:
    """A paper chosen for one digest, with why it was chosen."""

    paper: PaperData
    topic: str
    keyword: str
    field: str  # where it matched: title, ai_keywords, abstract, authors, organization, categories
    reason: str
    score: float = 0.0
    section: str = ""  # the heading it is shown under when the digest has sections
    rising: bool = False  # skipped earlier for too few upvotes, now past the threshold


@dataclass(frozen=True, slots=True)
class Digest:
    subscriber: Subscriber
    day: dt.date
    picks: tuple[Pick, ...] = field(default_factory=tuple)

    #: Papers that matched but had too few upvotes; remembered so they can come back "Rising".
    skipped_ids: tuple[str, ...] = ()

    @property
    def paper_ids(self) -> tuple[str, ...]:
        return tuple(p.paper.id for p in self.picks)

    @property
    def sections(self) -> list[tuple[str, list[Pick]]]:
        """Picks grouped by section heading, in order of first appearance."""
        groups: dict[str, list[Pick]] = {}
        for pick in self.picks:
            groups.setdefault(pick.section, []).append(pick)
        return list(groups.items())


@dataclass(frozen=True, slots=True)
class Email:
    """A rendered digest: what the message stage wraps into MIME."""

    to: str
    to_name: str | None
    subject: str
    html: str
    text: str
    paper_ids: tuple[str, ...]  # the papers in the email, in order
    # Papers of the digest the size guard left out (they stay unsent, so they can come again).
    dropped_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready to go: made by ``compose``, read by ``deliver`` and the ledger.

    ``data`` is the bytes to send; ``envelope_from`` the SMTP ``MAIL FROM`` (it becomes the
    Return-Path: bounces go there). ``email`` is what it was made from; its ``html`` and
    ``text`` are "" when it was composed without bodies (a sender that sends the bytes only).
    """

    recipient: str
    envelope_from: str
    message_id: str
    data: bytes
    email: Email


@dataclass(frozen=True, slots=True)
class NothingNew:
    """A subscriber whose digest has no papers while ``send_empty`` is off: made by compose's
    select-and-compose instead of a message, read by the pipeline (reported, nothing sent)."""

    subscriber: Subscriber
    day: dt.date


@dataclass(frozen=True, slots=True)
class Weights:
    """``selection.weights``: made by the config, read by selection's ranking. The defaults
    favour what the community upvotes, and fast."""

    upvotes: float = 1.0
    velocity: float = 1.5
    match: float = 2.0
    half_life_days: float = 3.0


#: Section headings of their own in a digest with sections (selection writes them, the
#: config refuses a topic named like one).
TRENDING_SECTION = "Trending across your topics"
RISING_SECTION = "Rising"
PERSONAL_SECTION = "Your keywords"


def digest_id(digest: Digest) -> str:
    """The digest's key in the ledger and in its Message-ID: its day and cadence."""
    return f"{digest.day.isoformat()}/{digest.subscriber.cadence}"


def merge_papers(old: PaperData, new: PaperData) -> PaperData:
    """One paper reported by two sources (or two fetches), as one record.

    The Hugging Face record wins (upvotes, comments, ai_summary: arXiv has none of them);
    arXiv adds what only it knows, its categories and the author's comment. Between two
    records of the same kind the newer one wins, and so does its day.
    """
    if old.source == "huggingface" and new.source != "huggingface":
        base, extra = old, new
    else:
        base, extra = new, old
    return dataclasses.replace(
        base,
        categories=base.categories or extra.categories,
        arxiv_comment=base.arxiv_comment or extra.arxiv_comment,
    )


@dataclass(frozen=True, slots=True)
class Trend:
    """Upvotes gained between two snapshots of a paper taken ``hours`` apart: the store
    computes it from its snapshots, selection scores and describes it."""

    delta: int
    hours: float

    @property
    def per_day(self) -> float:
        return max(0.0, self.delta * 24.0 / self.hours) if self.hours > 0 else 0.0

    def describe(self) -> str:
        if self.delta <= 0:
            return ""
        when = "since yesterday" if 12 <= self.hours <= 36 else f"in {_span(self.hours)}"
        return f"+{self.delta} {when}"


def _span(hours: float) -> str:
    if hours < 36:
        return f"{round(hours)} h"
    return f"{round(hours / 24)} days"


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP answer: ``sources.http`` makes it, the store keeps it raw (conditional GET,
    ``--replay``) and gives it back."""

    url: str  # the request URL, query included: the key the store keeps it under
    status: int
    body: bytes
    headers: Mapping[str, str]
    from_store: bool = False  # the body came from the store (304 Not Modified, or a replay)


#: Where a subscriber is, one list for the whole product: ``pending`` (signed up, not
#: confirmed: never mailed a digest), ``active`` (mailed), ``paused`` (by the reader, from the
#: manage page), ``unsubscribed``, ``bounced`` (the address failed), ``complained`` (marked
#: a digest as spam). Only ``active`` subscribers get digests.
SubscriberStatus = Literal["pending", "active", "paused", "unsubscribed", "bounced", "complained"]
SUBSCRIBER_STATUSES: tuple[SubscriberStatus, ...] = (
    "pending",
    "active",
    "paused",
    "unsubscribed",
    "bounced",
    "complained",
)

#: How a subscriber came: the sign-up page, ``subscribers add``, ``subscribers import``, or
#: the config file's ``subscribers:`` list (operator-managed: the file's settings win).
SubscriberSource = Literal["web", "cli", "import", "config"]
SUBSCRIBER_SOURCES: tuple[SubscriberSource, ...] = ("web", "cli", "import", "config")


@dataclass(frozen=True, slots=True)
class SubscriberRecord:
    """A subscriber's row in the store: made by the sign-up page, the ``subscribers``
    commands and the run (for the file's subscribers), read back by the store; a run mails
    ``subscriber()`` of the active ones.

    ``id`` is opaque and random (the store makes it when it is ""): links and bounce
    addresses carry it, never the address. The consent record: ``created_at`` and
    ``signup_client`` (the sign-up's client address), ``confirmed_at`` and
    ``confirm_client``; ``reason`` says why the status was last changed.
    """

    email: str
    topics: tuple[str, ...]
    id: str = ""
    name: str | None = None
    cadence: Cadence = "daily"
    max_papers: int = 10
    min_upvotes: int = 0
    timezone: str = "UTC"
    send_at: dt.time | None = None
    keywords: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    sections: bool = False
    status: SubscriberStatus = "pending"
    source: SubscriberSource = "web"
    reason: str = ""
    created_at: dt.datetime | None = None
    confirmed_at: dt.datetime | None = None
    signup_client: str | None = None
    confirm_client: str | None = None
    updated_at: dt.datetime | None = None

    @property
    def key(self) -> str:
        """Identity: the address, compared case-insensitively (unique in the store)."""
        return self.email.casefold()

    def subscriber(self) -> Subscriber:
        """What a run selects and composes for."""
        return Subscriber(
            email=self.email,
            topics=self.topics,
            name=self.name,
            cadence=self.cadence,
            max_papers=self.max_papers,
            min_upvotes=self.min_upvotes,
            timezone=self.timezone,
            keywords=self.keywords,
            exclude=self.exclude,
            sections=self.sections,
            send_at=self.send_at,
            id=self.id,
        )

    @classmethod
    def of(
        cls, sub: Subscriber, *, status: SubscriberStatus, source: SubscriberSource
    ) -> SubscriberRecord:
        """The record for a ``Subscriber`` (a file's, a command line's)."""
        return cls(
            email=sub.email,
            topics=sub.topics,
            id=sub.id,
            name=sub.name,
            cadence=sub.cadence,
            max_papers=sub.max_papers,
            min_upvotes=sub.min_upvotes,
            timezone=sub.timezone,
            send_at=sub.send_at,
            keywords=sub.keywords,
            exclude=sub.exclude,
            sections=sub.sections,
            status=status,
            source=source,
        )


#: What came back about a subscriber (``inbound``): a permanent failure of the address, another
#: failure (counted), a spam complaint, an unsubscribe by mail.
InboundKind = Literal["hard", "soft", "complaint", "unsubscribe"]


#: A recipient's row in a run's ledger: ``pending`` (to send), ``sending`` (handed to the
#: server, no answer yet), then ``sent``, ``failed``, ``unknown`` (the server may have it),
#: ``deferred`` (a 4xx outlived the run's retries), ``empty`` (nothing new) or ``cancelled``.
LedgerStatus = Literal[
    "pending", "sending", "sent", "failed", "unknown", "empty", "cancelled", "deferred"
]


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """A recipient of a frozen run: the store reads it back, the ledger sends or cancels it."""

    run_id: int
    subscriber: str  # casefolded address
    email: str
    digest: str  # the frozen digest, as the store keeps it
    status: str
    deferrals: int = 0  # earlier runs that deferred it (a 4xx outlived their retries)


@dataclass(frozen=True, slots=True)
class RunHealth:
    """One send, run or scheduled run in the run log: ``health.logged`` writes it, ``status``
    and the silence warning read it back."""

    kind: str
    day: dt.date | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    papers: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    nothing_new: int = 0
    error: str | None = None
