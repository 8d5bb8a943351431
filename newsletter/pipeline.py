"""One run, from fetch to delivery. It calls the stages and does nothing else.

    papers  = sources.fetch(source, days)                          -> [PaperData]  (I/O: HTTP)
    store.add_papers(papers, now)                                  -> upvote snapshots (I/O: SQLite)
    matches = selection.match_topics(store.candidates(days), topics)          (pure, once per run)
    for subscriber in config.subscribers:
        digest = selection.select(matches, subscriber, store.sent_ids(subscriber), now)  (pure)
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
    """Fetch ``day`` (default: the latest day with papers), then build and deliver digests.

    ``only`` restricts the run to one subscriber's address (case-insensitive).
    """
    report = RunReport()
    day = day or source.latest_day(now.date())
    report.day = day
    if day is None:
        log.info("run.no_papers source=%s", source.name)
        return report

    papers = sources.fetch(source, [day])
    report.papers_fetched = len(papers)
    store.add_papers(papers, now)
    store.mark_fetched(source.name, day, len(papers), now)
    matches = selection.match_topics(store.candidates([day]), config.topic_models())

    env = render.make_env(config.templates_path)
    identity = render.Identity(
        title=config.newsletter.title,
        base_url=config.newsletter.base_url,
        operator_address=config.newsletter.from_address,
        subject_template=config.newsletter.subject,
    )
    mail_sender = message.load_sender(config)  # reads the DKIM key, if any
    for subscriber in config.subscriber_models():
        if only is not None and subscriber.key != only.casefold():
            continue
        digest = selection.select(matches, subscriber, store.sent_ids(subscriber.key), now, day=day)
        if not digest.picks:
            log.info("digest.nothing_new subscriber=%s day=%s", subscriber.email, day)
            report.nothing_new.append(subscriber.email)
            continue
        url = f"{config.newsletter.base_url}/unsubscribe/{unsubscribe.make_token(key, subscriber.email)}"
        email = render.render(
            digest, env, identity, recipient_name=subscriber.name, unsubscribe_url=url
        )
        digest_key = f"{day.isoformat()}/{subscriber.cadence}"
        outgoing = message.build(
            email, mail_sender, unsubscribe_url=url, digest_key=digest_key, now=now
        )
        try:
            sender.deliver(outgoing)
        except SendError as e:
            log.error("digest.failed subscriber=%s error=%s", subscriber.email, e)
            report.failed[subscriber.email] = str(e)
            continue
        if sender.records_deliveries:
            # email.paper_ids: papers the size guard left out stay unsent for next time.
            store.record_delivery(subscriber.key, email.paper_ids, digest_key, now)
        report.delivered.append(subscriber.email)
        log.info("digest.delivered subscriber=%s papers=%d", subscriber.email, len(digest.picks))
    sender.close()
    return report
