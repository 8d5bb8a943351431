"""When digests go out: send-time groups, a DST-safe trigger, and the ``serve`` daemon's scheduler.

Subscribers who share cadence, send time and timezone form a group with one job and a
stable id (``daily-0800-Europe/Berlin``). ``LocalTimeTrigger`` fires once per local day (or
week) at the local time: on the day clocks go forward a time in the gap fires at the same
distance after the transition (02:30 -> 03:30), and on the day they go back an ambiguous
time fires at its first occurrence only, so no job is lost or doubled.

The daemon is a thin loop: jobs only queue their group; one runner thread takes every group
queued at that moment and calls the pipeline once, so groups due together share one fetch.
Between runs the same thread calls ``resume`` soon after the start and then at least every
``RESUME_EVERY`` seconds: a run of the day that stopped early (SMTP down, a deferral) goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from newsletter.models import WEEKDAYS, Subscriber

log = logging.getLogger(__name__)

#: ``serve`` looks for an unfinished run of the day at least this often (seconds).
RESUME_EVERY = 15 * 60


@dataclass(frozen=True, slots=True, order=True)
class Group:
    cadence: str
    at: dt.time
    timezone: str

    @property
    def job_id(self) -> str:
        return f"{self.cadence}-{self.at.strftime('%H%M%S').removesuffix('00')}-{self.timezone}"


def group_subscribers(
    subscribers: Iterable[Subscriber], daily_at: dt.time
) -> dict[Group, list[Subscriber]]:
    """Subscribers by (cadence, send time, timezone); a subscriber's ``send_at`` wins."""
    groups: dict[Group, list[Subscriber]] = defaultdict(list)
    for sub in subscribers:
        groups[Group(sub.cadence, sub.send_at or daily_at, sub.timezone)].append(sub)
    return dict(sorted(groups.items()))


class LocalTimeTrigger(BaseTrigger):  # type: ignore[misc]
    """Fires at ``at`` local time in ``tz`` every day, or every ``weekday`` (0 = Monday)."""

    def __init__(self, at: dt.time, tz: str, weekday: int | None = None) -> None:
        self.at = at
        self.tz = zoneinfo.ZoneInfo(tz)
        self.weekday = weekday

    def __str__(self) -> str:
        every = "daily" if self.weekday is None else WEEKDAYS[self.weekday]
        return f"{every} at {self.at.isoformat()} {self.tz.key}"

    def fire_time(self, day: dt.date) -> dt.datetime:
        """The one instant for local ``day``. fold=0: the first of an ambiguous time, and
        a time in a gap keeps the offset from before the gap (so it lands after it)."""
        local = dt.datetime.combine(day, self.at).replace(tzinfo=self.tz, fold=0)
        return local.astimezone(dt.UTC)

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime | None:
        start = now.astimezone(self.tz).date() - dt.timedelta(days=1)
        for offset in range(16):
            day = start + dt.timedelta(days=offset)
            if self.weekday is not None and day.weekday() != self.weekday:
                continue
            when = self.fire_time(day)
            if when < now or (previous_fire_time is not None and when <= previous_fire_time):
                continue
            return when.astimezone(self.tz)
        return None

    def previous_fire_time(self, now: dt.datetime) -> dt.datetime | None:
        """The latest fire time at or before ``now``."""
        today = now.astimezone(self.tz).date()
        for offset in range(16):
            day = today - dt.timedelta(days=offset)
            if self.weekday is not None and day.weekday() != self.weekday:
                continue
            when = self.fire_time(day)
            if when <= now:
                return when
        return None


def trigger_for(group: Group, weekly_on: str) -> LocalTimeTrigger:
    weekday = None if group.cadence == "daily" else WEEKDAYS.index(weekly_on)
    return LocalTimeTrigger(group.at, group.timezone, weekday)


def due_now(
    groups: Mapping[Group, list[Subscriber]], weekly_on: str, now: dt.datetime, grace: dt.timedelta
) -> dict[dt.date, set[str]]:
    """For ``newsletter run``: subscribers whose latest send time passed within ``grace``,
    by the UTC day of that send time (the run they belong to). Pure."""
    due: dict[dt.date, set[str]] = defaultdict(set)
    for group, members in groups.items():
        when = trigger_for(group, weekly_on).previous_fire_time(now)
        if when is not None and now - when <= grace:
            due[when.astimezone(dt.UTC).date()].update(s.key for s in members)
    return dict(due)


def next_fire_times(
    groups: Iterable[Group], weekly_on: str, now: dt.datetime
) -> list[tuple[Group, dt.datetime]]:
    out = []
    for group in groups:
        when = trigger_for(group, weekly_on).get_next_fire_time(None, now)
        if when is not None:
            out.append((group, when))
    return sorted(out, key=lambda gw: gw[1])


RunGroups = Callable[[dt.datetime, set[str]], None]


class Scheduler:
    """APScheduler 3 in a background thread; jobs hand their group to one runner thread."""

    def __init__(
        self,
        run: RunGroups,
        *,
        grace_seconds: int,
        batch_seconds: float = 2.0,
        resume: Callable[[], None] | None = None,
        resume_every: float = RESUME_EVERY,
    ) -> None:
        self.run = run
        self.batch_seconds = batch_seconds
        self.resume = resume
        self.resume_every = resume_every
        self.scheduler = BackgroundScheduler(
            timezone=dt.UTC,
            job_defaults={
                "coalesce": True,
                "misfire_grace_time": grace_seconds,
                "max_instances": 1,
            },
        )
        self.members: dict[str, set[str]] = {}
        self.queued: set[str] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.runner = threading.Thread(target=self._runner, name="newsletter-runner", daemon=True)

    def set_groups(self, groups: Mapping[Group, list[Subscriber]], weekly_on: str) -> None:
        """Add, replace and remove jobs so they match ``groups`` (on start and on reload)."""
        with self.lock:
            wanted = {g.job_id: (g, {s.key for s in members}) for g, members in groups.items()}
            for job in self.scheduler.get_jobs():
                if job.id not in wanted:
                    job.remove()
                    log.info("schedule.removed job=%s", job.id)
            for job_id, (group, keys) in wanted.items():
                self.members[job_id] = keys
                trigger = trigger_for(group, weekly_on)
                if self.scheduler.get_job(job_id) is None:
                    self.scheduler.add_job(
                        self._fire, trigger, id=job_id, args=[job_id], name=str(trigger)
                    )
                    log.info("schedule.added job=%s trigger=%s", job_id, trigger)
                else:
                    self.scheduler.reschedule_job(job_id, trigger=trigger)
            self.members = {k: v[1] for k, v in wanted.items()}

    def next_runs(self) -> list[tuple[str, dt.datetime | None]]:
        # A job added before start() has no next_run_time yet.
        jobs = ((j.id, getattr(j, "next_run_time", None)) for j in self.scheduler.get_jobs())
        return sorted(jobs, key=lambda x: (str(x[1]), x[0]))

    def start(self) -> None:
        self.runner.start()
        self.scheduler.start()

    def _fire(self, job_id: str) -> None:
        with self.lock:
            self.queued.add(job_id)
        self.wake.set()

    def _runner(self) -> None:
        resume_at = time.monotonic() + self.batch_seconds  # soon: a restart resumes at once
        while not self.stopping.is_set():
            timeout = None if self.resume is None else max(0.0, resume_at - time.monotonic())
            if self.wake.wait(timeout) and not self.stopping.is_set():
                self._run_queued()
            if self.resume is not None and time.monotonic() >= resume_at:
                if not self.stopping.is_set():
                    self._resume()
                resume_at = time.monotonic() + self.resume_every

    def _run_queued(self) -> None:
        # Groups that fire together (several timezones, daily and weekly) share one run.
        self.stopping.wait(self.batch_seconds)
        with self.lock:
            self.wake.clear()
            keys = set().union(*(self.members.get(j, set()) for j in self.queued))
            jobs, self.queued = sorted(self.queued), set()
        if keys and not self.stopping.is_set():
            log.info("schedule.fire jobs=%s subscribers=%d", ",".join(jobs), len(keys))
            try:
                self.run(dt.datetime.now(dt.UTC), keys)
            except Exception:
                log.exception("schedule.run_failed jobs=%s", ",".join(jobs))

    def _resume(self) -> None:
        assert self.resume is not None
        try:
            self.resume()
        except Exception:
            log.exception("schedule.resume_failed")

    def stop(self, wait: bool = True) -> None:
        self.stopping.set()
        self.wake.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if wait and self.runner.is_alive():
            self.runner.join()

    def busy(self) -> bool:
        return self.runner.is_alive()


def describe(jobs: list[tuple[str, Any]]) -> str:
    return ", ".join(f"{j}: {t}" for j, t in jobs)
