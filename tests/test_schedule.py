"""Send times: groups, a DST-safe trigger (injected clock), and what `run` finds due."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from newsletter import schedule
from newsletter.models import Subscriber
from tests.clock import FakeClock

UTC = dt.UTC


def fires(trigger: schedule.LocalTimeTrigger, start: dt.datetime, n: int) -> list[str]:
    """The next ``n`` fire times from ``start``, as local ISO strings (as APScheduler asks)."""
    out, prev, now = [], None, start
    for _ in range(n):
        when = trigger.get_next_fire_time(prev, now)
        assert when is not None
        out.append(when.isoformat())
        prev, now = when, when
    return out


@pytest.mark.parametrize(
    ("tz", "start", "at", "expected"),
    [
        # Berlin springs forward on 2026-03-29 at 02:00: 02:30 does not exist that day.
        (
            "Europe/Berlin",
            dt.datetime(2026, 3, 27, 12, tzinfo=UTC),
            dt.time(2, 30),
            ["2026-03-28T02:30:00+01:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"],
        ),
        # Berlin falls back on 2026-10-25 at 03:00: 02:30 happens twice; fire once.
        (
            "Europe/Berlin",
            dt.datetime(2026, 10, 23, 12, tzinfo=UTC),
            dt.time(2, 30),
            ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
        ),
        # An ordinary morning time keeps its local hour across both changes.
        (
            "Europe/Berlin",
            dt.datetime(2026, 3, 28, 0, tzinfo=UTC),
            dt.time(8, 0),
            ["2026-03-28T08:00:00+01:00", "2026-03-29T08:00:00+02:00", "2026-03-30T08:00:00+02:00"],
        ),
        # New York springs forward on 2026-03-08 at 02:00.
        (
            "America/New_York",
            dt.datetime(2026, 3, 7, 12, tzinfo=UTC),
            dt.time(2, 15),
            ["2026-03-08T03:15:00-04:00", "2026-03-09T02:15:00-04:00", "2026-03-10T02:15:00-04:00"],
        ),
        # New York falls back on 2026-11-01 at 02:00: 01:30 happens twice; fire once.
        (
            "America/New_York",
            dt.datetime(2026, 10, 31, 12, tzinfo=UTC),
            dt.time(1, 30),
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00", "2026-11-03T01:30:00-05:00"],
        ),
    ],
)
def test_daily_fire_times_across_dst(
    tz: str, start: dt.datetime, at: dt.time, expected: list[str]
) -> None:
    assert fires(schedule.LocalTimeTrigger(at, tz), start, 3) == expected


def test_one_fire_per_local_day_over_a_year() -> None:
    for tz in ("Europe/Berlin", "America/New_York"):
        for at in (dt.time(0, 30), dt.time(1, 30), dt.time(2, 30), dt.time(8)):
            trigger = schedule.LocalTimeTrigger(at, tz)
            times = fires(trigger, dt.datetime(2026, 1, 1, tzinfo=UTC), 365)
            days = [
                dt.datetime.fromisoformat(t).astimezone(zoneinfo.ZoneInfo(tz)).date() for t in times
            ]
            assert len(set(days)) == 365, (tz, at)  # none doubled
            assert (days[-1] - days[0]).days == 364, (tz, at)  # none lost


def test_weekly_fires_on_its_weekday_across_dst() -> None:
    trigger = schedule.LocalTimeTrigger(dt.time(8), "Europe/Berlin", weekday=0)
    assert fires(trigger, dt.datetime(2026, 3, 20, tzinfo=UTC), 3) == [
        "2026-03-23T08:00:00+01:00",
        "2026-03-30T08:00:00+02:00",
        "2026-04-06T08:00:00+02:00",
    ]


def test_a_restart_right_after_a_fire_does_not_fire_again() -> None:
    trigger = schedule.LocalTimeTrigger(dt.time(8), "UTC")
    fired = dt.datetime(2026, 5, 8, 8, tzinfo=UTC)
    assert trigger.get_next_fire_time(fired, fired + dt.timedelta(seconds=1)) == dt.datetime(
        2026, 5, 9, 8, tzinfo=UTC
    )


def sub(
    email: str, tz: str = "UTC", cadence: str = "daily", send_at: dt.time | None = None
) -> Subscriber:
    return Subscriber(email=email, topics=("t",), timezone=tz, cadence=cadence, send_at=send_at)  # type: ignore[arg-type]


def test_groups_share_cadence_time_and_timezone_with_stable_ids() -> None:
    subs = [
        sub("a@x.org", "Europe/Berlin"),
        sub("b@x.org", "Europe/Berlin"),
        sub("c@x.org", "Europe/Berlin", send_at=dt.time(7, 30)),
        sub("d@x.org", "America/New_York", cadence="weekly"),
    ]
    groups = schedule.group_subscribers(subs, dt.time(8))
    assert {g.job_id: [s.email for s in m] for g, m in groups.items()} == {
        "daily-0800-Europe/Berlin": ["a@x.org", "b@x.org"],
        "daily-0730-Europe/Berlin": ["c@x.org"],
        "weekly-0800-America/New_York": ["d@x.org"],
    }


def test_due_now_by_the_utc_day_of_the_send_time() -> None:
    subs = [
        sub("berlin@x.org", "Europe/Berlin"),  # 08:00 CEST = 06:00 UTC
        sub("ny@x.org", "America/New_York", send_at=dt.time(21)),  # 21:00 EDT = 01:00 UTC next day
        sub("later@x.org", "UTC", send_at=dt.time(12)),
        sub("weekly@x.org", "UTC", cadence="weekly"),  # Mondays
    ]
    groups = schedule.group_subscribers(subs, dt.time(8))
    now = dt.datetime(2026, 5, 8, 9, tzinfo=UTC)  # a Friday
    grace = dt.timedelta(hours=6)
    assert schedule.due_now(groups, "monday", now, grace) == {dt.date(2026, 5, 8): {"berlin@x.org"}}
    # Half an hour before midnight in New York the NY subscriber is due, on the next UTC day.
    late = dt.datetime(2026, 5, 9, 1, 30, tzinfo=UTC)
    assert schedule.due_now(groups, "monday", late, grace) == {dt.date(2026, 5, 9): {"ny@x.org"}}
    # Past the grace nothing is due: the next digest's window catches up instead.
    assert schedule.due_now(groups, "monday", dt.datetime(2026, 5, 8, 23, tzinfo=UTC), grace) == {}
    monday = dt.datetime(2026, 5, 11, 8, 30, tzinfo=UTC)
    assert schedule.due_now(groups, "monday", monday, grace)[dt.date(2026, 5, 11)] == {
        "berlin@x.org",
        "weekly@x.org",
    }


def test_next_fire_times_are_sorted() -> None:
    groups = schedule.group_subscribers(
        [sub("a@x.org", "Asia/Tokyo"), sub("b@x.org", "UTC")], dt.time(8)
    )
    nxt = schedule.next_fire_times(groups, "monday", dt.datetime(2026, 5, 8, 0, tzinfo=UTC))
    assert [(g.job_id, w.astimezone(UTC).isoformat()) for g, w in nxt] == [
        ("daily-0800-UTC", "2026-05-08T08:00:00+00:00"),
        ("daily-0800-Asia/Tokyo", "2026-05-08T23:00:00+00:00"),
    ]


def test_groups_firing_together_share_one_run() -> None:
    calls: list[tuple[dt.datetime, set[str]]] = []
    monday = dt.datetime(2026, 5, 11, 7, 59, tzinfo=UTC)
    clock = FakeClock(monday)
    scheduler = schedule.Scheduler(
        lambda now, keys: calls.append((now, keys)), grace_seconds=60, clock=clock
    )
    groups = schedule.group_subscribers(
        [
            sub("a@x.org", "Europe/Berlin"),  # 06:00 UTC: passed before the start, not fired
            sub("b@x.org", "UTC"),
            sub("c@x.org", "UTC", cadence="weekly"),
        ],
        dt.time(8),
    )
    scheduler.set_groups(groups, "monday")
    assert sorted(j for j, _ in scheduler.next_runs()) == [
        "daily-0800-Europe/Berlin",
        "daily-0800-UTC",
        "weekly-0800-UTC",
    ]
    scheduler.start()
    try:
        clock.run_until(lambda: clock() >= monday + dt.timedelta(minutes=10), limit=3600)
    finally:
        scheduler.stop()
    assert [keys for _, keys in calls] == [{"b@x.org", "c@x.org"}]
    at, _ = calls[0]  # after the batch window that lets groups due together join
    assert dt.datetime(2026, 5, 11, 8, tzinfo=UTC) < at < dt.datetime(2026, 5, 11, 8, 1, tzinfo=UTC)


def test_set_groups_removes_jobs_of_groups_that_are_gone() -> None:
    calls: list[set[str]] = []
    clock = FakeClock(dt.datetime(2026, 5, 8, 0, 30, tzinfo=UTC))
    scheduler = schedule.Scheduler(
        lambda now, keys: calls.append(keys), grace_seconds=60, clock=clock
    )
    scheduler.set_groups(
        schedule.group_subscribers(
            [sub("a@x.org", "UTC"), sub("b@x.org", "Asia/Tokyo")], dt.time(8)
        ),
        "monday",
    )
    scheduler.set_groups(
        schedule.group_subscribers([sub("b@x.org", "Asia/Tokyo")], dt.time(9)), "monday"
    )
    assert [j for j, _ in scheduler.next_runs()] == ["daily-0900-Asia/Tokyo"]
    scheduler.start()
    try:  # a@x.org's 08:00 UTC and b's old 08:00 Tokyo (23:00 UTC) pass without a run
        clock.run_until(lambda: len(calls) == 1, limit=86400)
    finally:
        scheduler.stop()
    assert calls == [{"b@x.org"}]
    assert clock() > dt.datetime(2026, 5, 9, 0, tzinfo=UTC)  # 09:00 in Tokyo


@pytest.mark.parametrize(
    ("grace_hours", "runs"), [(1, ["05-08", "05-10"]), (24, ["05-08", "05-09"])]
)
def test_a_send_time_missed_beyond_the_grace_is_skipped_and_within_it_runs_once(
    grace_hours: int, runs: list[str]
) -> None:
    """A run that lasts 30 hours (or a machine asleep) misses the next day's send time:
    APScheduler's misfire grace and coalescing, in simulated time."""
    calls: list[dt.datetime] = []
    clock = FakeClock(dt.datetime(2026, 5, 8, 7, 59, tzinfo=UTC))

    def run(now: dt.datetime, keys: set[str]) -> None:
        calls.append(now)
        if len(calls) == 1:
            clock.advance(30 * 3600)

    scheduler = schedule.Scheduler(run, grace_seconds=grace_hours * 3600, clock=clock)
    scheduler.set_groups(schedule.group_subscribers([sub("a@x.org")], dt.time(8)), "monday")
    scheduler.start()
    try:
        clock.run_until(lambda: len(calls) == 2, limit=4 * 86400)
    finally:
        scheduler.stop()
    assert [f"{c:%m-%d}" for c in calls] == runs
