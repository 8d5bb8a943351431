"""Run health: every send, run and scheduled run in the run log, and the warning when
digests stop going out (``status``, ``send``, ``run`` and ``serve`` say it)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.models import RunHealth
from newsletter.pipeline import RunReport
from newsletter.store import Store

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


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
    from newsletter import roster

    active = roster.load(store, config.subscriber_models(), now, write=False).mailed
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
