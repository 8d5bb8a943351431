"""When digests go out, and the ``serve`` daemon that sends them.

Subscribers who share cadence, send time and timezone form a group with one job and a
stable id (``daily-0800-Europe/Berlin``). ``LocalTimeTrigger`` (an APScheduler trigger)
fires once per local day (or week) at the local time: on the day clocks go forward a time in
the gap fires at the same distance after the transition (02:30 -> 03:30), and on the day
they go back an ambiguous time fires at its first occurrence only, so no job is lost or
doubled.

The daemon is a thin loop over ``pipeline.run_once``:

    serve:    start the web application (web/); one job per group
    runner:   every group whose send time came -> run_due(...)       one run per UTC day,
              (those due together share one run, so one fetch)       pipeline.run_once
              soon after the start, then every RESUME_EVERY -> resume: the day's unfinished run
              every REGROUP_EVERY -> regroup: readers who signed up, were added or left since
              (another process wrote them) join or leave the jobs; a job keeps its next time
    inbound:  with inbound.imap, every inbound.poll_minutes -> read the bounce mailbox
              (wiring.read_bounce_mailbox: bounces, complaints, mailto unsubscribes)
    SIGHUP:   reload the config (a broken file is reported, the old one kept)
    SIGTERM:  finish the message in flight, stop

Every instant comes from an injected ``Clock`` (the system's in production): the runner
asks the triggers for their next fire time and waits on the clock until then, so a test
drives a day of sends in simulated time.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
import zoneinfo
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from apscheduler.triggers.base import BaseTrigger

from newsletter import compose, roster, wiring
from newsletter import config as config_mod
from newsletter.config import Config
from newsletter.deliver import SmtpSender
from newsletter.deliver.events import Outcome
from newsletter.errors import ConfigError, NewsletterError
from newsletter.health import logged, silence_warning
from newsletter.models import WEEKDAYS, Outgoing, Subscriber
from newsletter.pipeline import RunOptions, RunReport, run_once
from newsletter.sources import Source
from newsletter.store import Store
from newsletter.web import tokens
from newsletter.web.app import Site
from newsletter.web.outbox import Outbox
from newsletter.web.server import WebServer
from newsletter.web.site import MailKind

log = logging.getLogger(__name__)

#: ``serve`` looks for an unfinished run of the day at least this often (seconds).
RESUME_EVERY = 15 * 60
#: ``serve`` looks for readers who joined, changed or left in the state this often (seconds).
REGROUP_EVERY = 60


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


class Clock(Protocol):
    """Now, and waiting on it: the system clock in production, a simulated one in tests."""

    def __call__(self) -> dt.datetime:
        """Now, timezone-aware."""
        ...

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        """Until ``event`` is set (True) or ``seconds`` have passed on this clock (False)."""
        ...


class SystemClock:
    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        return event.wait(seconds)


SYSTEM_CLOCK = SystemClock()

RunGroups = Callable[[dt.datetime, set[str]], None]


@dataclass(slots=True)
class _Job:
    trigger: LocalTimeTrigger
    members: set[str]  # subscriber keys
    next_at: dt.datetime | None


class Scheduler:
    """A job per group on its trigger; one runner thread fires them and resumes.

    Semantics of APScheduler's jobs with ``coalesce`` and ``misfire_grace_time``: a job
    whose send time passed more than ``grace_seconds`` ago (the machine slept, a long run)
    is skipped, and however many times it was missed, it runs once.

    ``once(slot)``: whether this instance is the first to fire a job's send time (``slot``:
    the job and its time); False for every other instance serving the same state, which
    skips it. The runs' ledger would send each digest once anyway; this keeps the others
    from fetching and freezing the same run for nothing.
    """

    def __init__(
        self,
        run: RunGroups,
        *,
        grace_seconds: int,
        batch_seconds: float = 2.0,
        resume: Callable[[], None] | None = None,
        resume_every: float = RESUME_EVERY,
        regroup: Callable[[], None] | None = None,
        regroup_every: float = REGROUP_EVERY,
        clock: Clock = SYSTEM_CLOCK,
        once: Callable[[str], bool] | None = None,
    ) -> None:
        self.run = run
        self.once = once
        self.grace = dt.timedelta(seconds=grace_seconds)
        self.batch_seconds = batch_seconds
        self.resume = resume
        self.resume_every = dt.timedelta(seconds=resume_every)
        self.regroup = regroup
        self.regroup_every = dt.timedelta(seconds=regroup_every)
        self.clock = clock
        self.jobs: dict[str, _Job] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.runner = threading.Thread(target=self._runner, name="newsletter-runner", daemon=True)

    def set_groups(self, groups: Mapping[Group, list[Subscriber]], weekly_on: str) -> None:
        """Add, replace and remove jobs so they match ``groups`` (on start, on reload, on a
        regroup). A job that stays on the same trigger keeps its next run time, also one
        that came and is not fired yet: a regroup at the send time loses no send."""
        now = self.clock()
        with self.lock:
            wanted = {g.job_id: (g, {s.key for s in members}) for g, members in groups.items()}
            for job_id in [j for j in self.jobs if j not in wanted]:
                del self.jobs[job_id]
                log.info("schedule.removed job=%s", job_id)
            for job_id, (group, keys) in wanted.items():
                trigger = trigger_for(group, weekly_on)
                old = self.jobs.get(job_id)
                if old is not None and str(old.trigger) == str(trigger):
                    old.members = keys
                    continue
                if old is None:
                    log.info("schedule.added job=%s trigger=%s", job_id, trigger)
                self.jobs[job_id] = _Job(trigger, keys, trigger.get_next_fire_time(None, now))
        self.wake.set()

    def next_runs(self) -> list[tuple[str, dt.datetime | None]]:
        with self.lock:
            jobs = [(job_id, job.next_at) for job_id, job in self.jobs.items()]
        return sorted(jobs, key=lambda x: (str(x[1]), x[0]))

    def start(self) -> None:
        self.runner.start()

    def stop(self, wait: bool = True) -> None:
        self.stopping.set()
        self.wake.set()
        if wait and self.runner.is_alive():
            self.runner.join()

    def _runner(self) -> None:
        resume_at = self.clock() + dt.timedelta(
            seconds=self.batch_seconds
        )  # a restart resumes soon
        regroup_at = self.clock() + self.regroup_every
        while not self.stopping.is_set():
            now = self.clock()
            if self._due(now):
                # Groups that fire together (several timezones, daily and weekly) share one run.
                if not self.clock.wait(self.stopping, self.batch_seconds):
                    self._fire()
                continue
            if self.resume is not None and now >= resume_at:
                self._resume()
                resume_at = self.clock() + self.resume_every
                continue
            if self.regroup is not None and now >= regroup_at:
                self._call(self.regroup, "schedule.regroup_failed")
                regroup_at = self.clock() + self.regroup_every
                continue
            times = [j.next_at for j in self._jobs() if j.next_at is not None]
            if self.resume is not None:
                times.append(resume_at)
            if self.regroup is not None:
                times.append(regroup_at)
            until = min(times, default=None)
            self.clock.wait(self.wake, None if until is None else (until - now).total_seconds())
            self.wake.clear()

    def _jobs(self) -> list[_Job]:
        with self.lock:
            return list(self.jobs.values())

    def _due(self, now: dt.datetime) -> bool:
        return any(j.next_at is not None and j.next_at <= now for j in self._jobs())

    def _fire(self) -> None:
        now = self.clock()
        fired: list[str] = []
        keys: set[str] = set()
        with self.lock:
            for job_id, job in sorted(self.jobs.items()):
                if job.next_at is None or job.next_at > now:
                    continue
                if now - job.next_at > self.grace:
                    log.warning(
                        "schedule.missed job=%s at=%s (beyond the grace)", job_id, job.next_at
                    )
                elif self.once is not None and not self.once(f"{job_id}@{job.next_at.isoformat()}"):
                    log.info(
                        "schedule.skipped job=%s at=%s (another instance fired it)",
                        job_id,
                        job.next_at,
                    )
                else:
                    fired.append(job_id)
                    keys |= job.members
                job.next_at = job.trigger.get_next_fire_time(job.next_at, now)
        if keys and not self.stopping.is_set():
            log.info("schedule.fire jobs=%s subscribers=%d", ",".join(fired), len(keys))
            try:
                self.run(now, keys)
            except Exception:
                log.exception("schedule.run_failed jobs=%s", ",".join(fired))

    def _resume(self) -> None:
        assert self.resume is not None
        self._call(self.resume, "schedule.resume_failed")

    def _call(self, work: Callable[[], None], failed: str) -> None:
        try:
            work()
        except Exception:
            log.exception(failed)


# -- one run per day due: ``newsletter run`` and the daemon ------------------------------


def groups_of(config: Config, now: dt.datetime | None = None) -> dict[Group, list[Subscriber]]:
    """The send-time groups of everyone mailed: the file's subscribers and the state's
    readers (read from the state file, if there is one)."""
    return group_subscribers(mailed(config, now or SYSTEM_CLOCK()), config.schedule.daily_time)


def mailed(config: Config, now: dt.datetime) -> list[Subscriber]:
    """The roster's subscribers, read without writing (a state file not there: the file's)."""
    if config.state_url is None and not config.state_path.exists():
        return config.subscriber_models()
    with wiring.open_state(config, read_only=True) as store:
        return roster.load(store, config.subscriber_models(), now, write=False).mailed


def roster_version(config: Config) -> object:
    """What changes whenever a reader of the state is added, changed or deleted (None: no
    state file yet)."""
    if config.state_url is None and not config.state_path.exists():
        return None
    with wiring.open_state(config, read_only=True) as store:
        return store.roster_version()


def unfinished(config: Config, day: dt.date) -> set[str]:
    """Recipients the run of ``day`` has still to send: ``run`` and ``serve`` resume them."""
    if config.state_url is None and not config.state_path.exists():
        return set()
    with wiring.open_state(config) as store:
        return store.unfinished(day)


def run_due(
    config: Config,
    store: Store,
    found: list[Source],
    sender: SmtpSender,
    key: bytes,
    kind: str,
    due: dict[dt.date, set[str]],
    lock_wait: float,
    clock: Callable[[], dt.datetime] = SYSTEM_CLOCK,
) -> tuple[list[RunReport], str | None]:
    """One run per UTC day of the send times due, each fetching once for all its groups;
    and the warning when digests stopped going out (logged here, the caller says it)."""
    reports = []
    for day, keys in sorted(due.items()):

        def once(day: dt.date = day, keys: set[str] = keys) -> RunReport:
            return run_once(
                config,
                RunOptions(day=day, keys=keys, lock_wait=lock_wait),
                source=found,
                store=store,
                sender=sender,
                key=key,
                clock=clock,
            )

        reports.append(logged(store, kind, clock, once))
    warning = silence_warning(store, config, clock())
    if warning:
        log.warning("health.silent %s", warning)
    return reports, warning


# -- the daemon ---------------------------------------------------------------------------

#: How often ``serve`` purges the sign-ups not confirmed in time (seconds).
PURGE_EVERY = 15 * 60
#: How long after a page changed who gets mail the jobs are regrouped (changes meanwhile join).
REGROUP_AFTER = 1.0


def _period(now: dt.datetime, seconds: float) -> str:
    """The start of the period of ``seconds`` that ``now`` is in (UTC, periods counted from
    the epoch): the same slot for every instance, whenever in it each one asks."""
    stamp = now.timestamp()
    return dt.datetime.fromtimestamp(stamp - stamp % seconds, dt.UTC).isoformat()


class _Outcomes:
    """What became of sign-up emails (the Events a send reports to), counted by status."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def started(self, message: Outgoing) -> None:
        pass

    def retrying(self, message: Outgoing, detail: str) -> None:
        pass

    def finished(self, message: Outgoing, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1


class Daemon:
    """``newsletter serve``: the scheduler's runs, the web application, reload and stop.

    ``echo`` says to the operator what the command line shows (a silence warning).
    """

    def __init__(
        self,
        path: Path,
        config: Config,
        key: tokens.Keys,
        *,
        clock: Clock = SYSTEM_CLOCK,
        echo: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.path = path
        self.config = config
        self.keys = (key,) if isinstance(key, bytes) else tuple(key)
        self.key = self.keys[0]  # signs; the web pages verify with every one
        self.clock = clock
        self.echo = echo
        self.lock = threading.Lock()  # guards config and the current sender
        self.sender: SmtpSender | None = None
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.reported: set[str] = set()  # mailbox messages that failed, said once
        self.poller = threading.Thread(target=self._poll, name="newsletter-inbound", daemon=True)
        grace = config.schedule.grace_minutes * 60
        self.scheduler = Scheduler(
            self.run,
            grace_seconds=grace,
            resume=self.resume,
            regroup=self.regroup,
            clock=clock,
            once=self.fire_once,
        )
        self.roster_mark: object = None  # the state's readers as the jobs were last made
        # Listens now: a port in use is said before anything else happens. The pages read
        # the config in force (a SIGHUP replaces it) through this daemon.
        self.outbox = Outbox(self.signup_mail)
        self.changes = threading.Event()  # who gets mail changed (a page): regroup the jobs
        site = Site(
            config=lambda: self.config,
            keys=self.keys,
            clock=clock,
            mail=self.outbox.put,
            changed=self.changes.set,
        )
        self.web = WebServer(config.server.host, config.server.port, site)
        self.upkeep = threading.Thread(target=self._upkeep, name="newsletter-upkeep", daemon=True)

    def run(self, now: dt.datetime, keys: set[str]) -> None:
        """The run of the UTC day of ``now`` for ``keys``; its outcome is logged."""
        with self.lock:
            config = self.config
            if self.stop_requested.is_set():
                return
            sender = self.sender = SmtpSender(wiring.smtp_settings(config))
        try:
            with (
                wiring.open_state(config) as store,
                wiring.open_sources(config, None, store) as found,
            ):
                due = {now.astimezone(dt.UTC).date(): keys}
                reports, warning = run_due(
                    config, store, found, sender, self.key, "serve", due, 3600, self.clock
                )
            for report in reports:
                log.log(
                    logging.INFO if report.ok else logging.WARNING,
                    "run.done day=%s sent=%d failed=%d unknown=%d deferred=%d nothing_new=%d "
                    "pending=%d%s",
                    report.day,
                    report.this_run["sent"],
                    report.this_run["failed"],
                    report.this_run["unknown"],
                    len(report.deferred),
                    len(report.nothing_new),
                    report.pending,
                    f" error={report.aborted or report.source_errors}" if not report.ok else "",
                )
            if warning:
                self.echo(f"warning: {warning}")
        except NewsletterError as e:
            log.error("run.failed error=%s", e)
        finally:
            with self.lock:
                self.sender = None

    def fire_once(self, slot: str) -> bool:
        """Is this instance the first of those serving the state to fire the send ``slot``?"""
        return self._first("send", slot)

    def _first(self, job: str, slot: str) -> bool:
        """Is this instance the first of those serving the state to run ``job`` at ``slot``?
        A state that cannot be opened now: yes (the job then says why it cannot run)."""
        with self.lock:
            config = self.config
        try:
            with wiring.open_state(config) as store:
                return store.fire_once(job, slot, self.clock())
        except NewsletterError as e:
            log.warning("schedule.once_unknown job=%s slot=%s error=%s", job, slot, e)
            return True

    def resume(self) -> None:
        """Send what today's run left (SMTP down, deferred, stopped), whatever the send times."""
        with self.lock:
            config = self.config
        now = self.clock()
        keys = unfinished(config, now.date())
        if keys:
            log.info("run.resume day=%s subscribers=%d", now.date(), len(keys))
            self.run(now, keys)

    def regroup(self) -> None:
        """The jobs follow the readers who signed up, confirmed, were added or left since
        they were made (``roster_version`` changed: a page, ``subscribers add``, a bounce)."""
        with self.lock:
            config = self.config
        mark = roster_version(config)
        if mark == self.roster_mark:
            return
        self.roster_mark = mark
        groups = groups_of(config, self.clock())
        self.scheduler.set_groups(groups, config.schedule.weekly_on)
        log.info("schedule.regrouped jobs=%d", len(groups))

    def signup_mail(self, batch: Sequence[tuple[MailKind, str, Mapping[str, str]]]) -> None:
        """Sign-ups' emails (the outbox's worker calls this), sent now over one connection."""
        with self.lock:
            config = self.config
        masthead = compose.load_masthead(config)
        now = self.clock()
        letters = compose.Transactional(config.templates_path)  # its templates read once
        messages = [
            letters.compose(
                kind, to, links, masthead, now=now, confirm_hours=config.signup.confirm_hours
            )
            for kind, to, links in batch
        ]
        outcomes = _Outcomes()
        SmtpSender(wiring.smtp_settings(config), records_deliveries=False).send_all(
            messages, outcomes
        )
        for status, count in sorted(outcomes.counts.items()):
            log.log(
                logging.INFO if status == "sent" else logging.WARNING,
                "signup.mail_sent status=%s emails=%d",
                status,
                count,
            )

    def _upkeep(self) -> None:
        """Regroup the jobs soon after a page changed who gets mail (changes close together
        make one regroup; the scheduler regroups every REGROUP_EVERY anyway), and purge the
        sign-ups not confirmed in time every PURGE_EVERY."""
        purge_at = 0.0
        while not self.stop_requested.is_set():
            if time.monotonic() >= purge_at:
                self._purge(once=True)
                purge_at = time.monotonic() + PURGE_EVERY
            if not self.changes.wait(min(PURGE_EVERY, max(0.1, purge_at - time.monotonic()))):
                continue
            if self.stop_requested.is_set() or self.stop_requested.wait(REGROUP_AFTER):
                return
            self.changes.clear()
            try:
                self.regroup()  # now rather than at the scheduler's next REGROUP_EVERY
            except Exception:
                log.exception("schedule.regroup_failed")

    def _purge(self, *, once: bool = False) -> None:
        """Forget the sign-ups not confirmed in time; ``once``: unless another instance
        serving the state purged in this period already."""
        with self.lock:
            config = self.config
        if config.state_url is None and not config.state_path.exists():
            return
        if once and not self._first("purge", _period(self.clock(), PURGE_EVERY)):
            return
        try:
            with wiring.open_state(config) as store:
                roster.purge(store, self.clock(), config.signup.confirm_hours)
        except Exception:
            log.exception("signup.purge_failed")

    def poll_inbound(self) -> None:
        """One pass over the bounce mailbox (``inbound.imap``); a failure is logged."""
        with self.lock:
            config = self.config
        if config.inbound.imap is None:
            return
        try:
            # Tokens of ours exist only with a bounce address (VERP, the unsubscribe address).
            keys = self.keys if config.smtp.bounce_address else ()
            wiring.read_bounce_mailbox(config, keys, self.clock, reported=self.reported)
        except ConfigError as e:
            for line in e.problems:
                log.error("inbound.poll_failed %s", line)
        except NewsletterError as e:
            log.error("inbound.poll_failed %s", e)

    def _poll(self) -> None:
        """Every ``poll_minutes``, one pass over the bounce mailbox, by one instance of those
        serving the state: the first to reach a period reads it, the others skip it (two
        readers of one folder would handle its messages twice)."""
        while not self.stop_requested.is_set():
            with self.lock:
                minutes = self.config.inbound.poll_minutes
            if self._first("poll", _period(self.clock(), minutes * 60)):
                self.poll_inbound()
            else:
                log.debug("inbound.poll_skipped reason=another_instance")
            self.clock.wait(self.stop_requested, minutes * 60)

    def reload(self) -> None:
        """Read the config file again; a broken one is logged and the one loaded before kept."""
        try:
            config = config_mod.load(self.path)
            compose.check_templates(config.templates_path)
            compose.load_masthead(config)
            wiring.smtp_settings(config)
            if config.inbound.imap is not None:
                wiring.imap_password(config)
        except ConfigError as e:
            for line in e.problems:
                log.error("reload.failed %s", line)
            log.error("reload.failed keeping the configuration loaded before")
            return
        except NewsletterError as e:
            log.error("reload.failed %s; keeping the configuration loaded before", e)
            return
        with self.lock:
            self.config = config
        if config.inbound.imap is not None and not self.poller.is_alive():
            self.poller.start()
        groups = groups_of(config)
        self.scheduler.set_groups(groups, config.schedule.weekly_on)
        log.info("reload.done subscribers=%d jobs=%d", len(config.subscribers), len(groups))

    def on_signal(self, signum: int, frame: object) -> None:
        """SIGHUP asks for a reload; SIGTERM and SIGINT for a stop after the message in flight."""
        if signum == signal.SIGHUP:
            self.reload_requested.set()
            return
        self.stop()

    def stop(self) -> None:
        self.stop_requested.set()
        with self.lock:
            if self.sender is not None:
                self.sender.stop()

    def start(self) -> None:
        self.web.start()
        self.scheduler.set_groups(groups_of(self.config), self.config.schedule.weekly_on)
        self.scheduler.start()
        self.upkeep.start()
        if self.config.inbound.imap is not None:
            self.poller.start()

    def wait(self) -> None:
        """Until a stop is asked for, reloading when asked; then finish and close."""
        while not self.stop_requested.wait(0.5):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
        self.close()

    def close(self) -> None:
        log.info("serve.stopping (finishing the message in flight)")
        self.stop()
        self.scheduler.stop(wait=True)
        if self.poller.is_alive():
            self.poller.join()
        self.web.stop()
        self.outbox.close()
        self.changes.set()  # wakes the upkeep thread, which sees the stop
        if self.upkeep.is_alive():
            self.upkeep.join(timeout=30)
        log.info("serve.stopped")
