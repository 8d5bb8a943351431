"""One run, from fetch to delivery. It calls the stages and does nothing else.

    since   = {s: selection.window_start(s, day, store.last_digest_day(s), max_age)}  (pure)
    fetched = sources.fetch_all(sources, days of the windows the store lacks, log_to=store)
              # merged by arXiv id; a bad paper is skipped, a failed day or source is a
              # warning and retried next run; the run's own day fetched by no source fails
              # the run and nothing is sent                                 (I/O: HTTP)
    store.add_papers(fetched.papers, now)                          -> upvote snapshots (I/O: SQLite)
    matches = selection.match_topics(store.candidates(days), topics, trends)  (pure, once per run)
    for subscriber in due(config.subscribers, day):
        digest = selection.select(matches, subscriber, store.sent_ids(subscriber), now, since)  (pure)
        store.freeze(run, digest)                  (a real send: the run's ledger row, pending)
        email  = render.render(digest, env, identity, name, unsubscribe URL)             (pure)
        msg    = message.build(email, sender identity, ...)                              (pure)
        sender.send_all(msgs)                      (I/O: SMTP, or the preview folder)
        store.finish(run, subscriber, outcome)     (a real send only: ledger + sent-history)

A real send freezes its recipients and their digests in the ledger before the first
message goes out, so running it again the same day resumes it instead of building another;
a preview, a dry run and a test send run on a copy of the state in memory and record
nothing (a test send reads back the digest the day's run froze, when there is one). I/O lives
at the edges behind small protocols (``Source``, ``Store``, ``Sender``) so tests hand in
fakes and production wires the real ones the same way.

With enough subscribers the pure stages run on a pool of processes (``build``). A real send
selects here (the ledger keeps each digest) and composes on the pool. A preview, a dry run
or a test send keeps no digest, so its workers get the matches once and select too
(``build.select_and_compose``): this process only reads each subscriber's history from the
store and hands the messages on. Only a sender that writes pages (the preview folder) needs
their HTML and text back from the workers: a real send composes without them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections import Counter
from collections.abc import (
    Callable,
    Collection,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field

from newsletter import build, message, render, selection, sources
from newsletter.config import Config
from newsletter.deliver import Outcome, Sender
from newsletter.errors import NewsletterError, SendError
from newsletter.models import Digest, PaperData, RunHealth, Subscriber
from newsletter.store import Store

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
Progress = Callable[[str, Outcome], None]


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
    unsubscribed: list[str] = field(default_factory=list)  # not mailed
    bounced: list[str] = field(default_factory=list)  # suppressed after a hard bounce: not mailed
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
    *,
    source: sources.Source | Sequence[sources.Source],
    store: Store,
    sender: Sender,
    now: dt.datetime,
    key: bytes,
    day: dt.date | None = None,
    only: str | None = None,
    keys: Collection[str] | None = None,
    due_only: bool = False,
    test: bool = False,
    retry_unknown: bool = False,
    clock: Clock | None = None,
    progress: Progress | None = None,
    lock_wait: float = 0.0,
) -> RunReport:
    """Build and deliver the digests for ``day`` (default: the latest day with papers).

    ``only`` restricts the run to one subscriber's address and ``keys`` to a set of them
    (casefolded; the scheduler's groups due now); ``due_only`` to the subscribers due on
    ``day`` (weekly ones on ``schedule.weekly_on``). With a sender that records deliveries
    this is a real send: frozen in the ledger, resumable, never twice. ``test``: a test
    send, which sends the digest the day's run froze for a subscriber when there is one
    (what they got, whatever their sent-history says now), else the one selected now.
    """
    report = RunReport()
    group = list(source) if isinstance(source, Sequence) else [source]
    try:
        day = day or sources.latest_day(group, now.date())
    except NewsletterError as e:
        report.source_errors, report.fetch_failed = [str(e)], True
        return report
    report.day = day
    if day is None:
        log.info("run.no_papers sources=%s", ",".join(s.name for s in group))
        return report
    states = store.states()
    subscribers = []
    for sub in config.subscriber_models():
        if only is not None and sub.key != only.casefold():
            continue
        if keys is not None and sub.key not in keys:
            continue
        if due_only and not selection.is_due(sub, day, config.schedule.weekly_on):
            continue
        if sub.key in states:
            unsubscribed = states[sub.key][0] == "unsubscribed"
            (report.unsubscribed if unsubscribed else report.bounced).append(sub.email)
            continue
        subscribers.append(sub)
    composer = _Composer(config, key, now, test_links=test)
    try:
        if not sender.records_deliveries:
            frozen = _frozen_for_test(config, store, day, subscribers, report) if test else []
            subscribers = [s for s in subscribers if s.email not in report.frozen]
            messages: Iterator[message.Outgoing] = iter(())
            if frozen:
                messages = composer.compose_all(frozen, len(frozen), bodies=True)
            if subscribers:
                selecting, requests = _match(config, group, store, now, day, subscribers, report)
                built = composer.select_and_compose(
                    selecting, requests, len(subscribers), bodies=True
                )
                messages = itertools.chain(messages, _nothing_new_reported(built, report))
            sender.send_all(messages, _Tally(report, progress))
            sender.close()
            return report
        return _send(
            config,
            group,
            store,
            sender,
            now,
            day,
            subscribers,
            composer,
            report,
            retry_unknown=retry_unknown,
            clock=clock or (lambda: now),
            progress=progress,
            lock_wait=lock_wait,
        )
    except _FetchFailed:
        log.error("run.fetch_failed errors=%s", report.source_errors)
        report.fetch_failed = True
        return report


def _frozen_for_test(
    config: Config, store: Store, day: dt.date, subscribers: list[Subscriber], report: RunReport
) -> list[Digest]:
    """The digests the run of ``day`` froze for these subscribers (a cancelled one aside)."""
    found = []
    for sub in subscribers:
        row = store.frozen_row(day, sub.key)
        if row is None or row.status == "cancelled":
            continue
        report.frozen[sub.email] = row.status
        if row.status == "empty" and not config.selection.send_empty:
            report.nothing_new.append(sub.email)
            continue
        found.append(store.frozen_digest(row, sub))
    return found


class _FetchFailed(Exception):
    """No source could fetch the run's own day: the run stops and nothing is sent."""


def _match(
    config: Config,
    group: list[sources.Source],
    store: Store,
    now: dt.datetime,
    day: dt.date,
    subscribers: list[Subscriber],
    report: RunReport,
) -> tuple[build.Selecting, Iterator[build.Request]]:
    """Fetch what the windows need and match once (eagerly); then each subscriber's request.

    The requests are read from the store lazily, one per subscriber: their sent-history
    and skipped papers, which ``selecting.select`` takes with the run's matches.
    """
    settings = config.selection
    since = {
        s.key: selection.window_start(s, day, store.last_digest_day(s.key), settings.max_age_days)
        for s in subscribers
    }
    first = min(since.values(), default=day)
    days = [first + dt.timedelta(days=i) for i in range((day - first).days + 1)]
    # A day every live source fetched after it ended is complete: not fetched again.
    complete = set(days)
    for source in group:
        complete &= store.complete_days(source.name, days) if source.live else set()
    wanted = [d for d in days if d not in complete]
    fetched = sources.fetch_all(group, wanted, log_to=store, now=now)
    if day in wanted and day not in fetched.days:
        report.source_errors = fetched.errors + fetched.day_errors
        raise _FetchFailed
    # Other days that failed are fetched again by later runs: the digests go out without them.
    report.source_errors = fetched.errors + [f"warning: {e}" for e in fetched.day_errors]
    report.papers_fetched = len(fetched.papers)
    store.add_papers(fetched.papers, now)
    log.info(
        "run.fetched days=%d fetched_days=%d papers=%d", len(days), len(wanted), len(fetched.papers)
    )

    candidates = store.candidates(days)
    report.papers_considered = len(candidates)
    matches = selection.match_topics(
        candidates,
        selection.topics_for_run(config.topic_models(), subscribers),
        trends=store.trends(p.id for p in candidates),
    )
    selecting = build.Selecting(
        matches,
        now,
        day,
        weights=settings.weights_model(),
        trending_count=settings.trending_count,
        send_empty=settings.send_empty,
    )
    return selecting, _requests(store, subscribers, since)


def _requests(
    store: Store, subscribers: list[Subscriber], since: dict[str, dt.date]
) -> Iterator[build.Request]:
    for subscriber in subscribers:
        yield build.Request(
            subscriber,
            since[subscriber.key],
            store.sent_ids(subscriber.key),
            store.skipped_ids(subscriber.key),
        )


class _Composer:
    """Digest -> Outgoing: the render and message stages with this installation's identity."""

    def __init__(
        self, config: Config, key: bytes, now: dt.datetime, *, test_links: bool = False
    ) -> None:
        self.config = config
        nl = config.newsletter
        self.spec = build.ComposeSpec(
            templates_dir=config.templates_path,
            identity=render.Identity(
                title=nl.title,
                base_url=nl.base_url,
                operator_address=nl.from_address,
                subject_template=nl.subject,
                topic_names=config.topic_names(),
            ),
            sender=message.load_sender(config),  # reads the DKIM key, if any
            key=key,
            base_url=nl.base_url,
            now=now,
            test_links=test_links,
        )
        self.composer = build.Composer(self.spec)  # reads the templates: fails early

    def compose_all(
        self,
        digests: Iterable[Digest],
        count: int,
        *,
        bodies: bool,
        papers: Sequence[PaperData] = (),
    ) -> Generator[message.Outgoing, None, None]:
        """In order and lazily; on every core when there are ``count`` enough to pay off.

        ``bodies=False``: the messages' ``email.html`` and ``email.text`` are "" (a sender
        that does not read them: they are most of what would cross back from a worker).
        ``papers``: the digests' papers, which a pool's workers then get once.
        """
        return build.compose_all(
            self.spec,
            digests,
            workers=build.workers_for(count),
            papers=papers,
            bodies=bodies,
            composer=self.composer,
        )

    def select_and_compose(
        self,
        selecting: build.Selecting,
        requests: Iterable[build.Request],
        count: int,
        *,
        bodies: bool,
    ) -> Iterator[message.Outgoing | build.NothingNew]:
        """``compose_all`` of each request's digest; a pool's workers select too."""
        return build.select_and_compose(
            self.spec,
            selecting,
            requests,
            workers=build.workers_for(count),
            bodies=bodies,
            composer=self.composer,
        )


def _nothing_new_reported(
    built: Iterable[message.Outgoing | build.NothingNew], report: RunReport
) -> Iterator[message.Outgoing]:
    """The messages; a subscriber with nothing new is logged and reported instead."""
    for item in built:
        if isinstance(item, build.NothingNew):
            log.info("digest.nothing_new subscriber=%s day=%s", item.subscriber.email, item.day)
            report.nothing_new.append(item.subscriber.email)
            continue
        yield item


class _Tally:
    """Events of a preview, dry run or test send: count, record nothing."""

    def __init__(self, report: RunReport, progress: Progress | None) -> None:
        self.report = report
        self.progress = progress

    def started(self, msg: message.Outgoing) -> None:
        pass

    def retrying(self, msg: message.Outgoing, detail: str) -> None:
        pass

    def finished(self, msg: message.Outgoing, outcome: Outcome) -> None:
        _count(self.report, msg.recipient, outcome)
        self.report.this_run[outcome.status] += 1
        if self.progress:
            self.progress(msg.recipient, outcome)


def _count(report: RunReport, recipient: str, outcome: Outcome) -> None:
    if outcome.status == "sent":
        report.delivered.append(recipient)
    elif outcome.status in ("failed", "deferred"):  # no later run retries a test send
        report.failed[recipient] = outcome.detail
    elif outcome.status == "unknown":
        report.unknown[recipient] = outcome.detail
    else:
        report.pending += 1


class _Ledger:
    """Events of a real send: every transition is committed as it happens.

    ``deferrals``: how many earlier runs deferred each recipient; one deferred again after
    ``max_deferrals`` of them fails.
    """

    def __init__(
        self,
        store: Store,
        run_id: int,
        clock: Clock,
        report: RunReport,
        progress: Progress | None,
        *,
        deferrals: Mapping[str, int] | None = None,
        max_deferrals: int = 3,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.clock = clock
        self.report = report
        self.progress = progress
        self.deferrals = deferrals or {}
        self.max_deferrals = max_deferrals

    def started(self, msg: message.Outgoing) -> None:
        self.store.mark_sending(self.run_id, msg.recipient.casefold(), msg.message_id, self.clock())

    def retrying(self, msg: message.Outgoing, detail: str) -> None:
        self.store.finish(self.run_id, msg.recipient.casefold(), "pending", detail, self.clock())

    def finished(self, msg: message.Outgoing, outcome: Outcome) -> None:
        key = msg.recipient.casefold()
        before = self.deferrals.get(key, 0)
        if outcome.status == "deferred" and before >= self.max_deferrals:
            runs = before + 1
            outcome = Outcome("failed", f"{outcome.detail} (still refused after {runs} runs)")
        self.report.this_run[outcome.status] += 1
        # email.paper_ids: papers the size guard left out stay unsent, for next time.
        self.store.finish(
            self.run_id,
            key,
            outcome.status,
            outcome.detail,
            self.clock(),
            paper_ids=msg.email.paper_ids,
        )
        if outcome.suppress:
            self.store.set_state(key, "suppressed", outcome.detail, self.clock())
        log.log(
            logging.WARNING if outcome.status in ("failed", "unknown") else logging.INFO,
            "digest.%s subscriber=%s detail=%r",
            outcome.status,
            msg.recipient,
            outcome.detail,
        )
        if self.progress:
            self.progress(msg.recipient, outcome)


def _send(
    config: Config,
    group: list[sources.Source],
    store: Store,
    sender: Sender,
    now: dt.datetime,
    day: dt.date,
    subscribers: list[Subscriber],
    composer: _Composer,
    report: RunReport,
    *,
    retry_unknown: bool,
    clock: Clock,
    progress: Progress | None,
    lock_wait: float,
) -> RunReport:
    with store.send_lock(lock_wait):
        run_id = store.open_run(day, now)
        for email in store.supersede_before(day, clock()):
            log.info(
                "digest.superseded subscriber=%s (left pending by an earlier day's run)", email
            )
        for email in store.recover_in_flight(run_id, clock()):
            log.warning(
                "digest.unknown subscriber=%s (in flight when a previous send stopped)", email
            )
        present = store.run_recipients(run_id)
        missing = [s for s in subscribers if s.key not in present]
        if missing:  # a new run, or subscribers added since it started
            # Selected here, in full, before the ledger transaction (fetching does I/O of its
            # own): the ledger keeps each digest, so a resumed run sends the same ones.
            selecting, requests = _match(config, group, store, now, day, missing, report)
            digests = [
                selecting.select(r.subscriber, r.since, r.sent_ids, r.skipped) for r in requests
            ]
            added = store.freeze(run_id, digests, clock(), send_empty=config.selection.send_empty)
            log.info("run.frozen run=%d day=%s added=%d", run_id, day, added)
        by_key = {s.key: s for s in subscribers}
        rows = store.pending(run_id, retry_unknown=retry_unknown)
        daily_cap = config.smtp.daily_cap
        if daily_cap is not None:
            start_of_day = dt.datetime.combine(clock().date(), dt.time(), tzinfo=dt.UTC)
            room = max(0, daily_cap - store.delivered_since(start_of_day))
            if len(rows) > room:
                log.warning("run.daily_cap cap=%d left_pending=%d", daily_cap, len(rows) - room)
                rows = rows[:room]

        configured = {s.key for s in config.subscriber_models()}
        states = store.states()
        # Shared by the run's digests, read once; the workers get them once too.
        papers = store.run_papers(run_id)

        def frozen() -> Iterator[Digest]:
            for row in rows:
                sub = by_key.get(row.subscriber)
                if sub is None:  # removed from the YAML, unsubscribed or suppressed since
                    if row.subscriber not in configured or row.subscriber in states:
                        store.finish(
                            run_id, row.subscriber, "cancelled", "no longer subscribed", clock()
                        )
                    continue
                yield store.frozen_digest(row, sub, papers)

        events = _Ledger(
            store,
            run_id,
            clock,
            report,
            progress,
            deferrals={r.subscriber: r.deferrals for r in rows if r.deferrals},
            max_deferrals=config.smtp.max_deferrals,
        )
        messages = composer.compose_all(
            frozen(), len(rows), bodies=False, papers=list(papers.values())
        )
        try:
            sender.send_all(messages, events)
        except SendError as e:
            # The server refuses us or cannot be reached: the rest stays pending for a later run.
            log.info("run.aborted error=%s", e)  # the caller says it: `send` prints, `serve` logs
            report.aborted = str(e)
        finally:
            # A send that stopped early ends the compose pool now; left to the garbage
            # collector, its shutdown can deadlock (it starts a thread while collecting).
            messages.close()
            sender.close()
        # Any other error (a ledger write that failed) leaves: the next run recovers the ledger.
        _fill_from_ledger(store, run_id, report)
        store.close_run(run_id, clock())
    return report


def _fill_from_ledger(store: Store, run_id: int, report: RunReport) -> None:
    """The run's totals, this invocation's work and what earlier ones did, from the ledger."""
    report.delivered = [e for e, _ in store.run_rows(run_id, "sent")]
    report.failed = dict(store.run_rows(run_id, "failed"))
    report.unknown = dict(store.run_rows(run_id, "unknown"))
    report.deferred = dict(store.run_rows(run_id, "deferred"))
    report.nothing_new = [e for e, _ in store.run_rows(run_id, "empty")]
    report.pending = store.run_counts(run_id)["pending"]


def logged(store: Store, kind: str, clock: Clock, run: Callable[[], RunReport]) -> RunReport:
    """Run and record it in the run log: start, end, counts and the error if any."""
    log_id = store.log_run_start(kind, clock())
    try:
        report = run()
    except Exception as e:
        try:
            store.log_run_end(log_id, clock(), RunHealth(kind, error=f"{type(e).__name__}: {e}"))
        except NewsletterError as also:  # the state file itself failed: report the first error
            log.info("run_log.not_recorded error=%s", also)
        raise
    error = report.aborted or ("; ".join(report.source_errors) if report.fetch_failed else None)
    store.log_run_end(
        log_id,
        clock(),
        RunHealth(
            kind,
            day=report.day,
            papers=report.papers_fetched,
            sent=report.this_run["sent"],
            failed=report.this_run["failed"],
            unknown=report.this_run["unknown"],
            nothing_new=len(report.nothing_new),
            error=error,
        ),
    )
    return report


def silence_warning(store: Store, config: Config, now: dt.datetime) -> str | None:
    """A warning when no digest went out for ``alert_after_days`` while subscribers are active."""
    states = store.states()
    active = [s for s in config.subscriber_models() if s.key not in states]
    if not active:
        return None
    days = config.newsletter.alert_after_days
    last = store.last_delivery_at()
    if last is None:
        first = store.first_run_at()
        if first is None or now - first < dt.timedelta(days=days):
            return None
        return f"no digest has gone out since the first run ({first:%Y-%m-%d}) with {len(active)} active subscribers"
    if now - last >= dt.timedelta(days=days):
        return (
            f"no digest has gone out for {(now - last).days} days (last {last:%Y-%m-%d %H:%M} UTC) "
            f"with {len(active)} active subscribers: check the sources, SMTP and the run log"
        )
    return None
