"""One run, from fetch to delivery. It calls the stages and does nothing else.

    fetched = sources.fetch_all(sources, days, log_to=store)      -> [PaperData]  (I/O: HTTP)
              # merged by arXiv id; a failed source is skipped and its days retried next run;
              # no source answering fails the run and nothing is sent
    store.add_papers(fetched.papers, now)                          -> upvote snapshots (I/O: SQLite)
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
from collections.abc import Sequence
from dataclasses import dataclass, field

from newsletter import message, render, selection, sources, unsubscribe
from newsletter.config import Config
from newsletter.errors import NewsletterError, SendError
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
    # One line per source that failed; with no source answering the run failed.
    source_errors: list[str] = field(default_factory=list)
    fetch_failed: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.fetch_failed


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
) -> RunReport:
    """Fetch ``day`` (default: the latest day with papers), then build and deliver digests.

    ``only`` restricts the run to one subscriber's address (case-insensitive).
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

    fetched = sources.fetch_all(group, [day], log_to=store, now=now)
    report.source_errors = fetched.errors
    if not fetched.any_ok:
        report.fetch_failed = True
        return report
    report.papers_fetched = len(fetched.papers)
    store.add_papers(fetched.papers, now)
    matches = selection.match_topics(store.candidates([day]), config.topic_models())

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
            store.record_delivery(subscriber.key, digest.paper_ids, digest_key, now)
        report.delivered.append(subscriber.email)
        log.info("digest.delivered subscriber=%s papers=%d", subscriber.email, len(digest.picks))
    sender.close()
    return report
