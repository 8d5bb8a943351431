"""Run health: the run log and the warning when digests stop going out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from newsletter import config as config_mod
from newsletter.health import logged, silence_warning
from newsletter.pipeline import RunReport
from newsletter.store import SqliteStore
from tests.fakes import FakeSource, OutboxSender
from tests.test_catchup import DAILY, day, make_config, paper, run

T0 = dt.datetime(2026, 5, 4, 8, tzinfo=dt.UTC)


def test_every_logged_run_records_its_counts_and_error(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, DAILY)
    with SqliteStore(cfg.state_path) as store:
        report = RunReport(day=T0.date(), papers_fetched=12, nothing_new=["x@example.org"])
        report.this_run.update({"sent": 3, "failed": 1})
        logged(store, "send", lambda: T0, lambda: report)
        failing = RunReport(
            day=T0.date(), fetch_failed=True, source_errors=["huggingface: failed: down"]
        )
        logged(store, "serve", lambda: T0 + dt.timedelta(hours=1), lambda: failing)
        last, first = store.last_runs(2)
    assert (first.kind, first.papers, first.sent, first.failed, first.nothing_new, first.error) == (
        "send",
        12,
        3,
        1,
        1,
        None,
    )
    assert (last.kind, last.error) == ("serve", "huggingface: failed: down")


def test_a_warning_when_no_digest_went_out_for_alert_after_days(tmp_path: Path) -> None:
    cfg: config_mod.Config = make_config(tmp_path, DAILY)
    source = FakeSource({day(0): [paper("a", day(0))]})
    run(cfg, source, OutboxSender(), day(0))  # a digest goes out on day 0
    with SqliteStore(cfg.state_path) as store:
        store.log_run_start("run", T0)
        assert silence_warning(store, cfg, T0 + dt.timedelta(days=2)) is None
        # The ledger's clock is the run's "now" (08:00 on day 0).
        warning = silence_warning(
            store, cfg, dt.datetime.combine(day(3), dt.time(9), tzinfo=dt.UTC)
        )
        assert warning is not None and warning.startswith("no digest has gone out for 3 days")
        ada = store.subscriber_by_email("ada@example.org")  # made by the run, for its id
        assert ada is not None
        store.set_subscriber_status(ada.id, "unsubscribed", "test", T0)
        assert (
            silence_warning(store, cfg, dt.datetime.combine(day(9), dt.time(9), tzinfo=dt.UTC))
            is None
        )


def test_no_warning_before_the_first_digest_is_due(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, DAILY)
    with SqliteStore(cfg.state_path) as store:
        assert silence_warning(store, cfg, T0) is None  # never ran
        store.log_run_start("run", T0)
        assert silence_warning(store, cfg, T0 + dt.timedelta(days=1)) is None
        assert "since the first run" in (
            silence_warning(store, cfg, T0 + dt.timedelta(days=4)) or ""
        )
