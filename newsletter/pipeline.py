"""One run, from fetch to delivery: the map. It calls the stages and does nothing else.

    now         = clock()
    day         = options.day or sources.latest_day(sources, now)               (I/O: HTTP)
    roster      = roster.load(store, config's subscribers, now)   the store's active readers and
                                                     the file's (a row each, for its id)
    subscribers = the roster's mailed: --subscriber, due (selection.is_due); the file's held
                  ones (paused, unsubscribed, bounced, removed) reported
    spec        = compose.ComposeSpec(templates, compose.load_masthead(config), key, now)
                                                     (reads the DKIM key, if any)

    preview, dry run, test send (sender.records_deliveries is false; the store is a copy):
        frozen   = ledger.frozen_for_test(store, day, subscribers)   a test send only: the
                                                     digest the day's run froze, if any
        selecting, requests = match(the others)
        messages = compose.compose_many(spec, frozen digests, bodies=True)
                 + compose.select_and_compose(spec, selecting, requests, bodies=True)
                   # on a pool the workers select too; nothing new -> reported, not composed
        sender.send_all(messages, tally)             (I/O: the preview folder, or SMTP)

    real send (under the state's send lock: SQLite's file lock; none on PostgreSQL, where
    several senders share the run):
        under the run's freeze lock (PostgreSQL: the first sender freezes, the others wait):
            run     = ledger.open_run(store, day, clock) # earlier days superseded, in-flight
                                                     # rows of a send that died -> unknown
            missing = run.missing(subscribers)
            if missing:                              # a new run, or subscribers added since
                selecting, requests = match(missing)
                run.freeze(selecting.select(r) for r in requests)  before any message goes out
        for batch in run.batches(subscribers, retry_unknown, smtp.daily_cap, lease):
            messages = compose.compose_many(spec, run.digests(batch.rows, ...), bodies=False)
            sender.send_all(messages, run.recorder(batch))  (I/O: SMTP; each outcome
                                                     committed; a lapsed claim stops the batch)
        report   = run.totals(); run.close()

    match(subscribers):
        since   = {s: selection.window_start(s, day, store.last_digest_day(s), max_age)}  (pure)
        fetched = sources.fetch_all(sources, the days the windows need and the store lacks,
                                    log_to=store)   # a failed day is retried by later runs;
                                    # the run's own day fetched by no source fails the run
        store.add_papers(fetched.papers, now)
        matches = selection.match_topics(store.candidates(days), topics, store.trends(...))
        requests = (subscriber, since, store.sent_ids(s), store.skipped_ids(s)), lazily

Pure stages take ``now``; I/O lives at the edges behind small protocols (``sources.Source``,
``store.Store``, ``deliver.Sender``), so tests hand in fakes and production wires the real
ones the same way. A real send freezes its recipients and their digests before the first
message goes out, so running it again the same day resumes it (``ledger``); a preview, a
dry run and a test send run on a copy of the state in memory and record nothing. Only a
sender that writes pages (the preview folder) needs the messages' HTML and text back from
the composing workers: a real send composes without them (``bodies=False``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from newsletter import collector, compose, ledger, roster, selection, sources
from newsletter.config import Config
from newsletter.deliver import Outcome, Sender
from newsletter.errors import ClaimLost, NewsletterError, SendError
from newsletter.inbound.handle import Rules
from newsletter.models import LedgerRow, NothingNew, PaperData, Subscriber
from newsletter.selection import Request, Selecting
from newsletter.store import Store

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]

#: How long a sender waits for another to freeze the day's run (it fetches and selects first).
FREEZE_WAIT = 1800.0
Progress = Callable[[str, Outcome], None]


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What one run is asked to do; the defaults: every subscriber, the latest day with papers."""

    day: dt.date | None = None
    #: One subscriber's address (``--subscriber``); ``keys``: a set of them, casefolded (the
    #: scheduler's groups due now).
    only: str | None = None
    keys: Collection[str] | None = None
    #: Only the subscribers due on ``day`` (weekly ones on ``schedule.weekly_on``).
    due_only: bool = False
    #: A test send: the digest the day's run froze for the subscriber when there is one
    #: (what they got, whatever their sent-history says now), else the one selected now.
    test: bool = False
    #: A real send also sends again the rows whose outcome is unknown.
    retry_unknown: bool = False
    #: Seconds to wait for another process's send on the same state.
    lock_wait: float = 0.0
    #: Told each recipient's outcome as it happens.
    progress: Progress | None = None


@dataclass(slots=True)
class RunReport:
    day: dt.date | None = None
    papers_fetched: int = 0
    papers_considered: int = 0
    delivered: list[str] = field(default_factory=list)
    nothing_new: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)
    # A 4xx outlived the retries: the next send or run for the day tries again.
    deferred: dict[str, str] = field(default_factory=dict)
    unsubscribed: list[str] = field(default_factory=list)  # not mailed (or complained, removed)
    bounced: list[str] = field(default_factory=list)  # bounced (a hard bounce): not mailed
    paused: list[str] = field(default_factory=list)  # paused from the manage page: not mailed
    pending: int = 0  # left for a later run (daily cap, or the run was stopped)
    aborted: str | None = None
    # One line per source or day that failed; with the run's own day fetched by no source
    # the run failed, else they are warnings.
    source_errors: list[str] = field(default_factory=list)
    fetch_failed: bool = False
    # What this invocation did (the lists above are the day's run as a whole).
    this_run: Counter[str] = field(default_factory=Counter)
    # A test send: recipient -> the ledger status of the frozen digest it sent (the day's
    # run had one); a recipient not here got the digest selected now.
    frozen: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and self.aborted is None and not self.fetch_failed


def run_once(
    config: Config,
    options: RunOptions,
    *,
    source: sources.Source | Sequence[sources.Source],
    store: Store,
    sender: Sender,
    key: bytes,
    clock: Clock,
) -> RunReport:
    """Build and deliver the digests of ``options.day`` (default: the latest day with papers).

    With a sender that records deliveries this is a real send: frozen in the ledger,
    resumable, never twice; with any other, a preview that records nothing.
    """
    now = clock()
    report = RunReport()
    group = list(source) if isinstance(source, Sequence) else [source]
    try:
        day = options.day or sources.latest_day(group, now.date())
    except NewsletterError as e:
        report.source_errors, report.fetch_failed = [str(e)], True
        return report
    report.day = day
    if day is None:
        log.info("run.no_papers sources=%s", ",".join(s.name for s in group))
        return report
    who = roster.load(store, config.subscriber_models(), now)
    collector.trim()  # the store's rows it read and wrote, freed
    subscribers = _recipients(config, options, day, who, report)
    spec = compose.ComposeSpec(
        config.templates_path, compose.load_masthead(config), key, now, test_links=options.test
    )
    job = _Job(config, options, group, store, sender, now, day, spec, report, who.keys)
    try:
        if not sender.records_deliveries:
            _preview(job, subscribers)
        else:
            _send(job, subscribers, clock)
    except _FetchFailed:
        log.error("run.fetch_failed errors=%s", report.source_errors)
        report.fetch_failed = True
    return report


def _recipients(
    config: Config, options: RunOptions, day: dt.date, who: roster.Roster, report: RunReport
) -> list[Subscriber]:
    """The roster's subscribers this run is for; the file's held ones are reported, not mailed."""

    def wanted(sub: Subscriber) -> bool:
        if options.only is not None and sub.key != options.only.casefold():
            return False
        if options.keys is not None and sub.key not in options.keys:
            return False
        return not options.due_only or selection.is_due(sub, day, config.schedule.weekly_on)

    for sub, status in who.held:
        if wanted(sub):
            held = {"bounced": report.bounced, "paused": report.paused}
            held.get(status, report.unsubscribed).append(sub.email)
    return [sub for sub in who.mailed if wanted(sub)]


def _preview(job: _Job, subscribers: list[Subscriber]) -> None:
    """A preview, a dry run or a test send: composed with bodies (the preview folder shows
    them), counted, recorded nowhere."""
    config, options, store, sender = job.config, job.options, job.store, job.sender
    day, spec, report = job.day, job.spec, job.report
    messages: Iterator[compose.Outgoing] = iter(())
    if options.test:
        frozen = ledger.frozen_for_test(
            store, day, subscribers, send_empty=config.selection.send_empty
        )
        report.frozen = {f.subscriber.email: f.status for f in frozen}
        report.nothing_new += [f.subscriber.email for f in frozen if f.digest is None]
        digests = [f.digest for f in frozen if f.digest is not None]
        subscribers = [s for s in subscribers if s.email not in report.frozen]
        if digests:
            messages = compose.compose_many(spec, digests, count=len(digests), bodies=True)
    if subscribers:
        selecting, requests = job.match(subscribers)
        built = compose.select_and_compose(
            spec, selecting, requests, count=len(subscribers), bodies=True
        )
        messages = itertools.chain(messages, _nothing_new_reported(built, report))
    sender.send_all(messages, _Tally(report, options.progress))
    sender.close()


def _send(job: _Job, subscribers: list[Subscriber], clock: Clock) -> None:
    """A real send of the day's frozen run: see the module's map."""
    config, options, store, sender = job.config, job.options, job.store, job.sender
    day, report = job.day, job.report
    with store.send_lock(options.lock_wait):
        with store.freeze_lock(day, FREEZE_WAIT):
            run = ledger.open_run(store, day, clock)
            missing = run.missing(subscribers)
            if missing:
                # Fetched and matched first (fetching does I/O of its own), then selected as
                # the ledger freezes them, a chunk at a time: the ledger keeps each digest, so
                # a resumed run sends the same ones; 100,000 of them are never all in memory.
                selecting, requests = job.match(missing)
                with collector.paused():  # ~1 of 14 s of CPU for 100,000: walking the heap
                    run.freeze(
                        (
                            selecting.select(r.subscriber, r.since, r.sent_ids, r.skipped)
                            for r in requests
                        ),
                        send_empty=config.selection.send_empty,
                    )
        spec = dataclasses.replace(job.spec, run_id=run.id)  # named in each VERP envelope sender
        # Claimed batches (PostgreSQL) compose with one composer, made when the first batch
        # composes in this process (a send whose batch goes to a compose pool never makes it).
        composer = functools.cache(functools.partial(compose.Composer, spec))
        papers = run.papers()
        batches = run.batches(
            [s.key for s in subscribers],
            retry_unknown=options.retry_unknown,
            daily_cap=config.smtp.daily_cap,
            lease_seconds=config.smtp.claim_lease_seconds,
        )
        try:
            for batch in batches:
                collector.trim()  # the digests selected and frozen, the claim's reading: freed
                recorder = run.recorder(
                    batch.rows,
                    max_deferrals=config.smtp.max_deferrals,
                    progress=options.progress,
                    rules=Rules.of(config),
                    batch=batch,
                    rate_per_second=config.smtp.rate_per_second,
                )
                try:
                    _send_batch(job, spec, composer, run, batch.rows, subscribers, papers, recorder)
                except ClaimLost as e:  # others have its rows now: on to a new claim
                    log.warning("run.claim_lapsed error=%s", e)
                finally:
                    report.this_run.update(recorder.counts)
                # Aborted, stopped (SIGTERM), or rows given back: the rest is a later run's.
                stopped = getattr(job.sender, "stopped", False)
                if report.aborted or stopped or recorder.counts["pending"]:
                    break
        finally:
            batches.close()  # the claim held now is released
            sender.close()
        # Any other error (a ledger write that failed) leaves: the next run recovers the ledger.
        totals = run.totals()
        report.delivered, report.failed, report.unknown = totals.sent, totals.failed, totals.unknown
        report.deferred, report.nothing_new = totals.deferred, totals.empty
        report.pending = totals.pending
        run.close()


def _send_batch(
    job: _Job,
    spec: compose.ComposeSpec,
    composer: Callable[[], compose.Composer],
    run: ledger.Run,
    rows: list[LedgerRow],
    subscribers: list[Subscriber],
    papers: dict[str, PaperData],
    recorder: ledger.Recorder,
) -> None:
    """Compose and send one claimed batch; a refusing server ends the send (``aborted``)."""
    digests = run.digests(rows, subscribers, job.mailed, papers)
    # A real send's sender sends the bytes; the ledger reads the papers each one carried.
    messages = compose.compose_many(
        spec,
        digests,
        count=len(rows),
        bodies=False,
        papers=list(papers.values()),
        composer=composer,
    )
    try:
        job.sender.send_all(messages, recorder)
    except SendError as e:
        # The server refuses us or cannot be reached: the rest stays pending for a later run.
        log.info("run.aborted error=%s", e)  # the caller says it: `send` prints, `serve` logs
        job.report.aborted = str(e)
    finally:
        # A send that stopped early ends the compose pool now; left to the garbage
        # collector, its shutdown can deadlock (it starts a thread while collecting).
        messages.close()


class _FetchFailed(Exception):
    """No source could fetch the run's own day: the run stops and nothing is sent."""


@dataclass(slots=True)
class _Job:
    """One run's inputs, shared by its two paths; ``match`` fetches and matches for them."""

    config: Config
    options: RunOptions
    group: list[sources.Source]
    store: Store
    sender: Sender
    now: dt.datetime
    day: dt.date
    spec: compose.ComposeSpec
    report: RunReport
    mailed: frozenset[str]  # everyone the roster mails, not only this run's

    def match(self, subscribers: list[Subscriber]) -> tuple[Selecting, Iterator[Request]]:
        """Fetch what the subscribers' windows need and match once (eagerly); the requests
        are read from the store lazily, one per subscriber: sent-history, skipped papers."""
        store, day, settings = self.store, self.day, self.config.selection
        since = {
            s.key: selection.window_start(
                s, day, store.last_digest_day(s.key), settings.max_age_days
            )
            for s in subscribers
        }
        first = min(since.values(), default=day)
        days = [first + dt.timedelta(days=i) for i in range((day - first).days + 1)]
        # A day every live source fetched after it ended is complete: not fetched again.
        complete = set(days)
        for source in self.group:
            complete &= store.complete_days(source.name, days) if source.live else set()
        wanted = [d for d in days if d not in complete]
        fetched = sources.fetch_all(self.group, wanted, log_to=store, now=self.now)
        report = self.report
        if day in wanted and day not in fetched.days:
            report.source_errors = fetched.errors + fetched.day_errors
            raise _FetchFailed
        # Other days that failed are fetched again by later runs: the digests go out without them.
        report.source_errors = fetched.errors + [f"warning: {e}" for e in fetched.day_errors]
        report.papers_fetched = len(fetched.papers)
        store.add_papers(fetched.papers, self.now)
        log.info(
            "run.fetched days=%d fetched_days=%d papers=%d",
            len(days),
            len(wanted),
            len(fetched.papers),
        )

        candidates = store.candidates(days)
        report.papers_considered = len(candidates)
        matches = selection.match_topics(
            candidates,
            selection.topics_for_run(self.config.topic_models(), subscribers),
            trends=store.trends(p.id for p in candidates),
        )
        selecting = Selecting(
            matches,
            self.now,
            day,
            weights=settings.weights_model(),
            trending_count=settings.trending_count,
            send_empty=settings.send_empty,
        )
        return selecting, _requests(store, subscribers, since)


def _requests(
    store: Store, subscribers: list[Subscriber], since: dict[str, dt.date]
) -> Iterator[Request]:
    for subscriber in subscribers:
        yield Request(
            subscriber,
            since[subscriber.key],
            store.sent_ids(subscriber.key),
            store.skipped_ids(subscriber.key),
        )


def _nothing_new_reported(
    built: Iterable[compose.Outgoing | NothingNew], report: RunReport
) -> Iterator[compose.Outgoing]:
    """The messages; a subscriber with nothing new is logged and reported instead."""
    for item in built:
        if isinstance(item, NothingNew):
            log.info("digest.nothing_new subscriber=%s day=%s", item.subscriber.email, item.day)
            report.nothing_new.append(item.subscriber.email)
            continue
        yield item


class _Tally:
    """Events of a preview, dry run or test send: count, record nothing."""

    def __init__(self, report: RunReport, progress: Progress | None) -> None:
        self.report = report
        self.progress = progress

    def started(self, msg: compose.Outgoing) -> None:
        pass

    def retrying(self, msg: compose.Outgoing, detail: str) -> None:
        pass

    def finished(self, msg: compose.Outgoing, outcome: Outcome) -> None:
        report = self.report
        if outcome.status == "sent":
            report.delivered.append(msg.recipient)
        elif outcome.status in ("failed", "deferred"):  # no later run retries a test send
            report.failed[msg.recipient] = outcome.detail
        elif outcome.status == "unknown":
            report.unknown[msg.recipient] = outcome.detail
        else:
            report.pending += 1
        report.this_run[outcome.status] += 1
        if self.progress:
            self.progress(msg.recipient, outcome)
