"""The send ledger: a real send's protocol over the ``Store``, so a day's digests go out once.

    run = open_run(store, day, clock)      the day's run, created once; earlier days' unsent
                                           rows superseded; rows left in flight by a send
                                           that died -> unknown (the server may have them)
    run.missing(subscribers)               who the run has no row for yet
    run.freeze(digests)                    their digests, kept before any message goes out
    for batch in run.batches(keys, ...):   claimed rows: pending and deferred ones (unknown
                                           with retry_unknown), within the daily cap; a claim
                                           holds a lease that the recorder renews (several
                                           senders share a run on PostgreSQL: each claims
                                           what no other has, SKIP LOCKED; SQLite: one batch)
    rows = run.due(retry_unknown, cap)     the same rows, read without a claim
    run.digests(rows, subscribers, ...)    each row's frozen digest, on the run's papers (read
                                           once); a row whose subscriber left (removed,
                                           paused, unsubscribed, bounced) cancelled
    recorder = run.recorder(rows, ...)     the sender's Events: every transition committed
                                           as it happens; deferred too often -> failed
    run.totals(); run.close()              the day's counts; finished once nothing is left

A resumed run sends what was frozen, whatever the subscriber's sent-history says now. A test
send reads the day's frozen digest back (``frozen_for_test``) and records nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from newsletter.deliver import Outcome
from newsletter.errors import ClaimLost
from newsletter.inbound.handle import Rules, smtp_refusal
from newsletter.models import Digest, LedgerRow, LedgerStatus, Outgoing, PaperData, Subscriber
from newsletter.store import Store

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
Progress = Callable[[str, Outcome], None]

#: Rows a sender claims at a time when several share a run: small enough that the others
#: get work from the start and a dead sender's lease holds back little, large enough that a
#: claim (one transaction) is rare next to the messages.
CLAIM_BATCH = 250


def open_run(store: Store, day: dt.date, clock: Clock) -> Run:
    """The run of ``day``, ready to resume: call with the send lock held."""
    run = Run(store, store.open_run(day, clock()), day, clock)
    for email in store.supersede_before(day, clock()):
        log.info("digest.superseded subscriber=%s (left pending by an earlier day's run)", email)
    for email in store.recover_in_flight(run.id, clock()):
        log.warning("digest.unknown subscriber=%s (in flight when a previous send stopped)", email)
    return run


@dataclass(frozen=True, slots=True)
class Totals:
    """A run's rows by outcome: the day's run as a whole, whichever sends did the work."""

    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # address -> the server's reply
    unknown: dict[str, str] = field(default_factory=dict)
    deferred: dict[str, str] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)  # nothing new
    pending: int = 0  # left for a later send (daily cap, or the send stopped)


@dataclass(frozen=True, slots=True)
class Run:
    """One day's frozen run in the store."""

    store: Store
    id: int
    day: dt.date
    clock: Clock

    def missing(self, subscribers: Iterable[Subscriber]) -> list[Subscriber]:
        """The subscribers without a row: a new run, or added since it started."""
        present = self.store.run_recipients(self.id)
        return [s for s in subscribers if s.key not in present]

    def freeze(self, digests: Iterable[Digest], *, send_empty: bool) -> int:
        """Add these recipients and their digests; a digest without papers is ``empty``
        (nothing to send) unless ``send_empty``. Rows already there never change."""
        added = self.store.freeze(self.id, digests, self.clock(), send_empty=send_empty)
        log.info("run.frozen run=%d day=%s added=%d", self.id, self.day, added)
        return added

    def due(self, *, retry_unknown: bool, daily_cap: int | None) -> list[LedgerRow]:
        """The rows to send now, in order: pending and deferred (and unknown with
        ``retry_unknown``), at most what the daily cap leaves of today (UTC)."""
        rows = self.store.pending(self.id, retry_unknown=retry_unknown)
        if daily_cap is None:
            return rows
        start_of_day = dt.datetime.combine(self.clock().date(), dt.time(), tzinfo=dt.UTC)
        room = max(0, daily_cap - self.store.delivered_since(start_of_day))
        if len(rows) > room:
            log.warning("run.daily_cap cap=%d left_pending=%d", daily_cap, len(rows) - room)
            rows = rows[:room]
        return rows

    def batches(
        self,
        keys: Collection[str],
        *,
        retry_unknown: bool,
        daily_cap: int | None,
        lease_seconds: float,
        size: int = CLAIM_BATCH,
    ) -> Generator[Batch, None, None]:
        """The rows of ``keys`` to send, claimed a batch at a time until none is left: the
        same rows ``due`` reads, but no two senders get the same one. Before each claim,
        claims whose lease lapsed are freed (their rows in flight -> unknown); the daily cap
        counts what went out today and what other senders have claimed. A row deferred (or
        left unknown) during this pass is not claimed again in it. A batch's rows left unsent
        are released when the caller moves on."""
        store = self.store
        since = self.clock()
        again: tuple[LedgerStatus, ...] = (
            ("deferred", "unknown") if retry_unknown else ("deferred",)
        )
        limit = size if store.shared else None  # one sender: all of it at once
        while True:
            for email in store.expire_claims(self.clock()):
                log.warning(
                    "digest.unknown subscriber=%s (in flight when its sender's claim lapsed)", email
                )
            with store.cap_lock():
                room = self._room(daily_cap)
                take = limit if room is None else room if limit is None else min(limit, room)
                if take == 0:
                    left = len(store.pending(self.id, retry_unknown=retry_unknown))
                    if left:
                        log.warning("run.daily_cap cap=%d left_pending=%d", daily_cap, left)
                    return
                claim_id, rows = store.claim(
                    self.id,
                    keys,
                    again=again,
                    since=since,
                    limit=take,
                    lease_seconds=lease_seconds,
                    now=self.clock(),
                )
            if not rows:
                store.release_claim(claim_id)
                if not store.claimed_unsent(self.id):
                    return
                # Others hold the rest: wait until they send it or their lease lapses.
                time.sleep(min(2.0, lease_seconds / 4))
                continue
            batch = Batch(claim_id, rows, lease_seconds)
            try:
                yield batch
            finally:
                store.release_claim(claim_id)

    def _room(self, daily_cap: int | None) -> int | None:
        """What the daily cap leaves of today (UTC), counting rows other senders claimed."""
        if daily_cap is None:
            return None
        start_of_day = dt.datetime.combine(self.clock().date(), dt.time(), tzinfo=dt.UTC)
        gone = self.store.delivered_since(start_of_day) + self.store.claimed_unsent()
        return max(0, daily_cap - gone)

    def papers(self) -> dict[str, PaperData]:
        """Every paper of the run's digests, read once: they share them."""
        return self.store.run_papers(self.id)

    def digests(
        self,
        rows: Iterable[LedgerRow],
        subscribers: Iterable[Subscriber],
        mailed: Collection[str],
        papers: dict[str, PaperData],
    ) -> Iterator[Digest]:
        """Each row's frozen digest, lazily, for the rows whose subscriber is in ``subscribers``
        (this send's), built on ``papers`` (``papers()``). A row whose subscriber is no longer
        ``mailed`` (the roster's keys: removed, paused, unsubscribed, bounced since) is
        cancelled; any other row is left for the send it is due in."""
        by_key = {s.key: s for s in subscribers}

        def rebuilt() -> Iterator[Digest]:
            for row in rows:
                sub = by_key.get(row.subscriber)
                if sub is None:
                    if row.subscriber not in mailed:
                        self.store.finish(
                            self.id,
                            row.subscriber,
                            "cancelled",
                            "no longer subscribed",
                            self.clock(),
                        )
                    continue
                yield self.store.frozen_digest(row, sub, papers)

        return rebuilt()

    def recorder(
        self,
        rows: Iterable[LedgerRow],
        *,
        max_deferrals: int,
        progress: Progress | None = None,
        rules: Rules | None = None,
        batch: Batch | None = None,
        rate_per_second: float | None = None,
    ) -> Recorder:
        """The ``Events`` of a send of ``rows``; a 5xx to RCPT is judged by ``rules``
        (``batch``: claimed, its lease renewed as it goes; ``rate_per_second``: shared with
        every sender of a shared state)."""
        deferrals = {r.subscriber: r.deferrals for r in rows if r.deferrals}
        recorder = Recorder(self, deferrals, max_deferrals, progress, rules, batch)
        if rate_per_second and self.store.shared:
            interval = 1.0 / rate_per_second
            recorder.pace = lambda: self.store.pace(interval)
        return recorder

    def totals(self) -> Totals:
        store = self.store
        return Totals(
            sent=[e for e, _ in store.run_rows(self.id, "sent")],
            failed=dict(store.run_rows(self.id, "failed")),
            unknown=dict(store.run_rows(self.id, "unknown")),
            deferred=dict(store.run_rows(self.id, "deferred")),
            empty=[e for e, _ in store.run_rows(self.id, "empty")],
            pending=store.run_counts(self.id)["pending"],
        )

    def close(self) -> None:
        """Mark the run finished when no row is left to send."""
        self.store.close_run(self.id, self.clock())


@dataclass(slots=True)
class Batch:
    """Rows claimed by this sender (``Run.batches``), held for ``lease_seconds`` at a time."""

    claim_id: int
    rows: list[LedgerRow]
    lease_seconds: float
    renewed: float = field(default_factory=time.monotonic)


class Recorder:
    """Events of a real send: every transition is committed as it happens.

    ``deferrals``: how many earlier runs deferred each recipient; one deferred again after
    ``max_deferrals`` of them fails. ``counts``: this send's outcomes. ``batch``: the claim
    the rows are sent under: its lease is renewed as messages go (every third of it); once
    it lapsed, ``started`` raises ``ClaimLost`` and the sender stops the batch. ``pace``
    (when set): the seconds to wait before a message starts, shared by every sender.
    """

    def __init__(
        self,
        run: Run,
        deferrals: Mapping[str, int],
        max_deferrals: int,
        progress: Progress | None = None,
        rules: Rules | None = None,
        batch: Batch | None = None,
    ) -> None:
        self.rules = rules or Rules()
        self.store = run.store
        self.run_id = run.id
        self.clock = run.clock
        self.deferrals = deferrals
        self.max_deferrals = max_deferrals
        self.progress = progress
        self.batch = batch
        self.counts: Counter[str] = Counter()
        self.pace: Callable[[], float] | None = None

    def started(self, msg: Outgoing) -> None:
        batch = self.batch
        if batch is not None and time.monotonic() - batch.renewed > batch.lease_seconds / 3:
            if not self.store.renew_claim(batch.claim_id, batch.lease_seconds, self.clock()):
                raise ClaimLost(
                    str(self.run_id), "this sender's claim lapsed; others have its rows"
                )
            batch.renewed = time.monotonic()
        self.store.mark_sending(
            self.run_id,
            msg.recipient.casefold(),
            msg.message_id,
            self.clock(),
            claim=None if batch is None else batch.claim_id,
        )

    def retrying(self, msg: Outgoing, detail: str) -> None:
        self.store.finish(self.run_id, msg.recipient.casefold(), "pending", detail, self.clock())

    def finished(self, msg: Outgoing, outcome: Outcome) -> None:
        key = msg.recipient.casefold()
        before = self.deferrals.get(key, 0)
        if outcome.status == "deferred" and before >= self.max_deferrals:
            runs = before + 1
            outcome = Outcome("failed", f"{outcome.detail} (still refused after {runs} runs)")
        self.counts[outcome.status] += 1
        # email.paper_ids: papers the size guard left out stay unsent, for next time.
        self.store.finish(
            self.run_id,
            key,
            outcome.status,
            outcome.detail,
            self.clock(),
            paper_ids=msg.email.paper_ids,
        )
        if outcome.suppress or outcome.refused:
            # A 5xx to RCPT: suppressed at once (user unknown) or counted (mailbox full), by
            # the rules bounces read back later are judged by.
            smtp_refusal(
                self.store,
                key,
                outcome.detail,
                permanent=outcome.suppress,
                rules=self.rules,
                run_id=self.run_id,
                now=self.clock(),
            )
        log.log(
            logging.WARNING if outcome.status in ("failed", "unknown") else logging.INFO,
            "digest.%s subscriber=%s detail=%r",
            outcome.status,
            msg.recipient,
            outcome.detail,
        )
        if self.progress:
            self.progress(msg.recipient, outcome)


@dataclass(frozen=True, slots=True)
class FrozenForTest:
    """A test send's subscriber whose day's run froze a digest: the status of its row, and the
    digest to send (None: it was empty, and empty digests are not sent)."""

    subscriber: Subscriber
    status: str
    digest: Digest | None


def frozen_for_test(
    store: Store, day: dt.date, subscribers: Iterable[Subscriber], *, send_empty: bool
) -> list[FrozenForTest]:
    """The digests the run of ``day`` froze for these subscribers (a cancelled one aside)."""
    found = []
    for sub in subscribers:
        row = store.frozen_row(day, sub.key)
        if row is None or row.status == "cancelled":
            continue
        empty = row.status == "empty" and not send_empty
        found.append(
            FrozenForTest(sub, row.status, None if empty else store.frozen_digest(row, sub))
        )
    return found
