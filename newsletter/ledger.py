"""The send ledger: a real send's protocol over the ``Store``, so a day's digests go out once.

    run = open_run(store, day, clock)      the day's run, created once; earlier days' unsent
                                           rows superseded; rows left in flight by a send
                                           that died -> unknown (the server may have them)
    run.missing(subscribers)               who the run has no row for yet
    run.freeze(digests)                    their digests, kept before any message goes out
    rows = run.due(retry_unknown, cap)     pending and deferred rows, within the daily cap
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
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from newsletter.deliver import Outcome
from newsletter.inbound.handle import Rules, smtp_refusal
from newsletter.models import Digest, LedgerRow, Outgoing, PaperData, Subscriber
from newsletter.store import Store

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
Progress = Callable[[str, Outcome], None]


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
    ) -> Recorder:
        """The ``Events`` of a send of ``rows``; a 5xx to RCPT is judged by ``rules``."""
        deferrals = {r.subscriber: r.deferrals for r in rows if r.deferrals}
        return Recorder(self, deferrals, max_deferrals, progress, rules)

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


class Recorder:
    """Events of a real send: every transition is committed as it happens.

    ``deferrals``: how many earlier runs deferred each recipient; one deferred again after
    ``max_deferrals`` of them fails. ``counts``: this send's outcomes.
    """

    def __init__(
        self,
        run: Run,
        deferrals: Mapping[str, int],
        max_deferrals: int,
        progress: Progress | None = None,
        rules: Rules | None = None,
    ) -> None:
        self.rules = rules or Rules()
        self.store = run.store
        self.run_id = run.id
        self.clock = run.clock
        self.deferrals = deferrals
        self.max_deferrals = max_deferrals
        self.progress = progress
        self.counts: Counter[str] = Counter()

    def started(self, msg: Outgoing) -> None:
        self.store.mark_sending(self.run_id, msg.recipient.casefold(), msg.message_id, self.clock())

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
