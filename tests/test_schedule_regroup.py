"""``serve`` picks up readers who join while it runs: the jobs are regrouped every minute
from the state (a sign-up page, ``subscribers add`` in another process), and a regroup
keeps each job's next run time, so none is lost at its send time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from newsletter import schedule
from newsletter.models import Subscriber, SubscriberRecord
from newsletter.store import SqliteStore
from tests.clock import FakeClock
from tests.httpserver import FixtureServer
from tests.smtpserver import SmtpServer, free_port
from tests.test_serve import daemon_in_process, write_config

UTC = dt.UTC


def reader(address: str) -> Subscriber:
    return Subscriber(email=address, topics=("everything",))


def test_a_regroup_at_the_send_time_keeps_the_jobs_next_run() -> None:
    calls: list[set[str]] = []
    clock = FakeClock(dt.datetime(2026, 5, 8, 7, 59, 59, tzinfo=UTC))
    scheduler = schedule.Scheduler(
        lambda now, keys: calls.append(keys), grace_seconds=600, clock=clock
    )
    scheduler.set_groups(schedule.group_subscribers([reader("a@x.org")], dt.time(8)), "monday")
    eight = dt.datetime(2026, 5, 8, 8, tzinfo=UTC)
    assert scheduler.next_runs() == [("daily-0800-UTC", eight)]
    clock.advance(2)  # 08:00:01: due, not fired yet (the runner waits for groups to join)
    both = [reader("a@x.org"), reader("b@x.org")]
    scheduler.set_groups(schedule.group_subscribers(both, dt.time(8)), "monday")
    assert scheduler.next_runs() == [("daily-0800-UTC", eight)]  # not tomorrow's
    scheduler.start()
    try:
        clock.run_until(lambda: len(calls) == 1, limit=600)
    finally:
        scheduler.stop()
    assert calls == [{"a@x.org", "b@x.org"}]


def test_serve_sends_to_a_reader_added_while_it_runs(
    tmp_path: Path, hf_server: FixtureServer
) -> None:
    clock = FakeClock(dt.datetime(2026, 5, 8, 7, 50, tzinfo=UTC))
    with SmtpServer() as smtp:
        cfg = write_config(
            tmp_path / "c.yaml", hf_server, smtp.port, free_port(), [("file@example.org", "09:00")]
        )
        with daemon_in_process(cfg, clock) as daemon:
            assert [j for j, _ in daemon.scheduler.next_runs()] == ["daily-0900-UTC"]
            # Another process (a sign-up confirmed, `subscribers add`) writes a reader.
            with SqliteStore(tmp_path / "state.db") as store:
                store.add_subscriber(
                    SubscriberRecord(
                        "new@example.org",
                        ("everything",),
                        max_papers=2,
                        send_at=dt.time(8),
                        status="active",
                        source="cli",
                    ),
                    now=clock(),
                )
            clock.run_until(lambda: len(smtp.received) == 1, limit=3600)
            assert smtp.received[0].rcpt_tos == ["new@example.org"]
            assert dt.time(8) <= clock().time() < dt.time(8, 1)
            jobs = dict(daemon.scheduler.next_runs())
            assert jobs["daily-0900-UTC"] == dt.datetime(2026, 5, 8, 9, tzinfo=UTC)
