"""One run, from fetch to delivery. It calls the stages and does nothing else.

    since   = {s: selection.window_start(s, day, store.last_digest_day(s), max_age)}  (pure)
    papers  = sources.fetch(source, days of the windows the store lacks) -> [PaperData] (I/O: HTTP)
    store.add_papers(papers, now)                                  -> upvote snapshots (I/O: SQLite)
    matches = selection.match_topics(store.candidates(days), topics, trends)  (pure, once per run)
    for subscriber in config.subscribers:
        digest = selection.select(matches, subscriber, store.sent_ids(subscriber), now, since)  (pure)
        email  = render.render(digest, env, identity, name, unsubscribe URL)             (pure)
        msg    = message.build(email, sender identity, ...)                              (pure)
        sender.deliver(msg)                        (I/O: SMTP, or the preview folder)
        store.record_delivery(...)                 (a real send only; a preview never)

I/O lives at the edges behind small protocols (``Source``, ``Store``, ``Sender``) so tests
hand in fakes and production wires the real ones the same way.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass, field

from newsletter import message, render, selection, sources, unsubscribe
from newsletter.config import Config
from newsletter.errors import SendError
from newsletter.send import Sender
from newsletter.store import Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunReport:
    day: dt.date | None = None
    papers_fetched: int = 0
    papers_considered: int = 0
    delivered: list[str] = field(default_factory=list)
    nothing_new: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def run_once(
    config: Config,
    *,
    source: sources.Source,
    store: Store,
    sender: Sender,
    now: dt.datetime,
    key: bytes,
    day: dt.date | None = None,
    only: str | None = None,
) -> RunReport:
    """Fetch what the subscribers' windows need, then build and deliver their digests for ``day``.

    ``day`` defaults to the latest day with papers; ``only`` restricts the run to one
    subscriber's address (case-insensitive).
    """
    report = RunReport()
    day = day or source.latest_day(now.date())
    report.day = day
    if day is None:
        log.info("run.no_papers source=%s", source.name)
        return report
    subscribers = [
        s for s in config.subscriber_models() if only is None or s.key == only.casefold()
    ]
    settings = config.selection

    since = {
        s.key: selection.window_start(s, day, store.last_digest_day(s.key), settings.max_age_days)
        for s in subscribers
    }
    first = min(since.values(), default=day)
    days = [first + dt.timedelta(days=i) for i in range((day - first).days + 1)]
    complete = store.complete_days(source.name, days) if source.live else set()
    wanted = [d for d in days if d not in complete]
    papers = sources.fetch(source, wanted)
    report.papers_fetched = len(papers)
    store.add_papers(papers, now)
    per_day = Counter(p.day for p in papers)
    for d in wanted:
        store.mark_fetched(source.name, d, per_day[d], now)
    log.info("run.fetched days=%d fetched_days=%d papers=%d", len(days), len(wanted), len(papers))

    candidates = store.candidates(days)
    report.papers_considered = len(candidates)
    matches = selection.match_topics(
        candidates,
        selection.topics_for_run(config.topic_models(), subscribers),
        trends=store.trends(p.id for p in candidates),
    )

    env = render.make_env(config.templates_path)
    identity = render.Identity(
        title=config.newsletter.title,
        base_url=config.newsletter.base_url,
        operator_address=config.newsletter.from_address,
        subject_template=config.newsletter.subject,
    )
    mail_sender = message.Sender(
        from_header=config.newsletter.from_,
        list_id=message.list_id(
            config.newsletter.title, config.newsletter.from_address.rpartition("@")[2]
        ),
    )
    weights = settings.weights_model()
    for subscriber in subscribers:
        digest = selection.select(
            matches,
            subscriber,
            store.sent_ids(subscriber.key),
            now,
            day=day,
            since=since[subscriber.key],
            skipped=store.skipped_ids(subscriber.key),
            weights=weights,
            trending_count=settings.trending_count,
        )
        if not digest.picks and not settings.send_empty:
            log.info("digest.nothing_new subscriber=%s day=%s", subscriber.email, day)
            report.nothing_new.append(subscriber.email)
            continue
        url = f"{config.newsletter.base_url}/unsubscribe/{unsubscribe.make_token(key, subscriber.email)}"
        email = render.render(
            digest, env, identity, recipient_name=subscriber.name, unsubscribe_url=url
        )
        digest_id = f"{day.isoformat()}/{subscriber.cadence}"
        outgoing = message.build(
            email, mail_sender, unsubscribe_url=url, digest_key=digest_id, now=now
        )
        try:
            sender.deliver(outgoing)
        except SendError as e:
            log.error("digest.failed subscriber=%s error=%s", subscriber.email, e)
            report.failed[subscriber.email] = str(e)
            continue
        if sender.records_deliveries:
            store.record_delivery(digest, digest_id, now)
        report.delivered.append(subscriber.email)
        log.info("digest.delivered subscriber=%s papers=%d", subscriber.email, len(digest.picks))
    sender.close()
    return report
