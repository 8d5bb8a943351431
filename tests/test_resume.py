"""An unfinished run of the day (SMTP down, a deferral) is resumed by the next `run` and by
`serve`, whatever the send times."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections import Counter
from pathlib import Path

from newsletter import schedule
from tests.clock import FakeClock
from tests.httpserver import FixtureServer
from tests.smtpserver import Faults, SmtpServer, free_port
from tests.test_serve import at, cli, daemon_in_process, write_config
from tests.test_serve import hf as hf  # the fixture: today's list is a real capture

PEOPLE = [f"r{i}@example.org" for i in range(5)]


def people() -> list[tuple[str, str]]:
    # Their send time is hours away (and passed a day ago, beyond the 6 h grace): not due.
    return [(a, at(3 * 3600)) for a in PEOPLE]


def statuses(tmp_path: Path) -> Counter[str]:
    db = sqlite3.connect(tmp_path / "state.db")
    try:
        return Counter(dict(db.execute("SELECT status, COUNT(*) FROM ledger GROUP BY status")))
    finally:
        db.close()


def test_run_resumes_a_deferred_send_of_the_day(tmp_path: Path, hf: FixtureServer) -> None:
    # Every recipient gets a 451 once; with no retries within the run they are deferred.
    with SmtpServer(Faults(temp_fail_share=1.0, temp_fail_times=1)) as smtp:
        cfg = write_config(
            tmp_path / "c.yaml", hf, smtp.port, free_port(), people(), "  max_retries: 0"
        )
        first = cli(cfg, "send")
        assert first.returncode == 0, first.stdout + first.stderr
        assert statuses(tmp_path) == {"deferred": 5}

        resumed = cli(cfg, "run")  # nobody's send time has come: only the resume sends
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "nothing due now" not in resumed.stdout
    assert statuses(tmp_path) == {"sent": 5}
    assert smtp.handler.count() == dict.fromkeys(PEOPLE, 1)


def test_run_with_nothing_unfinished_sends_nothing(tmp_path: Path, hf: FixtureServer) -> None:
    with SmtpServer() as smtp:
        cfg = write_config(tmp_path / "c.yaml", hf, smtp.port, free_port(), people())
        assert cli(cfg, "send").returncode == 0
        again = cli(cfg, "run")
    assert again.returncode == 0 and "nothing due now" in again.stdout, again.stdout
    assert smtp.handler.count() == dict.fromkeys(PEOPLE, 1)


def test_serve_resumes_a_send_the_smtp_outage_stopped(tmp_path: Path, hf: FixtureServer) -> None:
    port = free_port()  # the SMTP server is down at first
    cfg = write_config(
        tmp_path / "c.yaml",
        hf,
        port,
        free_port(),
        people(),
        "  max_retries: 0\n  connect_timeout: 1",
    )
    down = cli(cfg, "send")
    assert down.returncode == 1 and "cannot connect" in down.stderr, down.stderr
    assert statuses(tmp_path) == {"pending": 5}
    clock = FakeClock(dt.datetime.now(dt.UTC))  # today: the day of the stopped send
    with SmtpServer(port=port) as smtp, daemon_in_process(cfg, clock):
        clock.run_until(lambda: len(smtp.received) == 5, limit=60)
    assert smtp.handler.count() == dict.fromkeys(PEOPLE, 1)
    assert statuses(tmp_path) == {"sent": 5}


def test_the_scheduler_looks_for_unfinished_runs_again_and_again() -> None:
    start = dt.datetime(2026, 5, 8, 12, tzinfo=dt.UTC)
    clock = FakeClock(start)
    calls: list[dt.datetime] = []
    scheduler = schedule.Scheduler(
        lambda now, keys: None, grace_seconds=60, resume=lambda: calls.append(clock()), clock=clock
    )
    scheduler.start()
    try:
        clock.run_until(lambda: len(calls) >= 3, limit=3600)
    finally:
        scheduler.stop()
    every = dt.timedelta(seconds=schedule.RESUME_EVERY)
    assert calls[:3] == [start + dt.timedelta(seconds=2), calls[0] + every, calls[0] + 2 * every]
    assert schedule.RESUME_EVERY <= 15 * 60
