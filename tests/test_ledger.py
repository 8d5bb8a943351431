"""The send ledger's protocol on each backend (a real SQLite file, a real PostgreSQL
database) with a fake sender: freeze, resume, supersede, recover, the daily cap,
cancellations, deferrals and what a test send reads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import get_args

import pytest

from newsletter import ledger
from newsletter.deliver import Events, Outcome
from newsletter.models import Digest, Email, LedgerStatus, Outgoing, PaperData, Pick, Subscriber
from newsletter.store import Store, open_store

pytest_plugins = ["tests.servers.fixtures"]

DAY = dt.date(2026, 5, 8)
T0 = dt.datetime(2026, 5, 8, 7, tzinfo=dt.UTC)
PAPERS = [PaperData(id=f"2605.0000{i}", title=f"Paper {i}", day=DAY, upvotes=i) for i in range(4)]


class Clock:
    """A clock that moves a minute each time it is read: every write has its own time."""

    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(minutes=1)
        return self.now


class ScriptedSender:
    """Hands each message to ``events`` with the outcome scripted for its recipient ("sent"
    by default); ``retry`` recipients are refused once (``retrying``) first."""

    records_deliveries = True

    def __init__(
        self, outcomes: dict[str, Outcome] | None = None, retry: Iterable[str] = ()
    ) -> None:
        self.outcomes = outcomes or {}
        self.retry = set(retry)
        self.sent: list[str] = []

    def send_all(self, messages: Iterable[Outgoing], events: Events) -> None:
        for m in messages:
            events.started(m)
            if m.recipient in self.retry:
                events.retrying(m, "451 try again")
                events.started(m)
            self.sent.append(m.recipient)
            events.finished(m, self.outcomes.get(m.recipient, Outcome("sent", "250 OK")))

    def close(self) -> None:
        pass


def subscriber(name: str) -> Subscriber:
    return Subscriber(email=f"{name}@example.org", topics=("t",))


def digest(sub: Subscriber, ids: Iterable[int] = (0, 1), day: dt.date = DAY) -> Digest:
    picks = tuple(Pick(PAPERS[i], "t", "k", "title", "r") for i in ids)
    return Digest(sub, day, picks)


def outgoing(d: Digest) -> Outgoing:
    email = Email(d.subscriber.email, None, "s", "", "", d.paper_ids)
    return Outgoing(d.subscriber.email, "papers@example.org", f"<{d.subscriber.key}>", b"x", email)


STATUSES: tuple[LedgerStatus, ...] = get_args(LedgerStatus)


def statuses(store: Store, run: ledger.Run) -> dict[str, str]:
    """Each recipient's row in the run: address -> status."""
    return {e: status for status in STATUSES for e, _ in store.run_rows(run.id, status)}


def send(
    run: ledger.Run,
    subscribers: list[Subscriber],
    sender: ScriptedSender,
    *,
    configured: Iterable[str] | None = None,
    retry_unknown: bool = False,
    daily_cap: int | None = None,
    max_deferrals: int = 3,
) -> ledger.Recorder:
    """What the pipeline does once a run is frozen, with ``sender`` in place of SMTP."""
    rows = run.due(retry_unknown=retry_unknown, daily_cap=daily_cap)
    keys = {s.key for s in subscribers} if configured is None else set(configured)
    digests = run.digests(rows, subscribers, keys, run.papers())
    recorder = run.recorder(rows, max_deferrals=max_deferrals)
    sender.send_all((outgoing(d) for d in digests), recorder)
    return recorder


@pytest.fixture
def store(store_url: str) -> Iterable[Store]:
    with open_store(store_url) as store:
        store.add_papers(PAPERS, T0)
        yield store


def test_a_run_is_frozen_once_and_resumed_with_the_same_digests(store: Store) -> None:
    ada, bob = subscriber("ada"), subscriber("bob")
    run = ledger.open_run(store, DAY, Clock())
    assert run.missing([ada, bob]) == [ada, bob]
    assert run.freeze([digest(ada, [0, 1]), digest(bob, [1, 2])], send_empty=False) == 2
    again = ledger.open_run(store, DAY, Clock())
    assert again.id == run.id and again.missing([ada, bob]) == []
    # Freezing again changes nothing: the digests are those of the first freeze.
    assert again.freeze([digest(ada, [3])], send_empty=False) == 0
    rebuilt = list(
        again.digests(
            again.due(retry_unknown=False, daily_cap=None),
            [ada, bob],
            [ada.key, bob.key],
            again.papers(),
        )
    )
    assert [d.paper_ids for d in rebuilt] == [
        ("2605.00000", "2605.00001"),
        ("2605.00001", "2605.00002"),
    ]
    # Each paper was read once: the digests share it.
    assert rebuilt[0].picks[1].paper is rebuilt[1].picks[0].paper


def test_a_digest_without_papers_is_empty_unless_send_empty(store: Store) -> None:
    run = ledger.open_run(store, DAY, Clock())
    run.freeze([digest(subscriber("ada"), [])], send_empty=False)
    run.freeze([digest(subscriber("bob"), [])], send_empty=True)
    assert statuses(store, run) == {"ada@example.org": "empty", "bob@example.org": "pending"}
    assert run.totals().empty == ["ada@example.org"]


def test_outcomes_are_committed_and_sent_history_written(store: Store) -> None:
    ada, bob, cy = subscriber("ada"), subscriber("bob"), subscriber("cy")
    clock = Clock()
    run = ledger.open_run(store, DAY, clock)
    run.freeze([digest(ada, [0, 1]), digest(bob), digest(cy)], send_empty=False)
    progress: list[tuple[str, str]] = []
    sender = ScriptedSender(
        {
            "bob@example.org": Outcome("failed", "550 5.1.1 no such user", suppress=True),
            "cy@example.org": Outcome("unknown", "after the message was sent: timeout"),
        },
        retry=["ada@example.org"],
    )
    store.sync_file_subscribers([ada, bob, cy], T0)  # their rows, as a run makes them
    rows = run.due(retry_unknown=False, daily_cap=None)
    recorder = run.recorder(
        rows, max_deferrals=3, progress=lambda r, o: progress.append((r, o.status))
    )
    digests = run.digests(rows, [ada, bob, cy], [ada.key, bob.key, cy.key], run.papers())
    sender.send_all((outgoing(d) for d in digests), recorder)
    assert recorder.counts == {"sent": 1, "failed": 1, "unknown": 1}
    assert progress == [
        ("ada@example.org", "sent"),
        ("bob@example.org", "failed"),
        ("cy@example.org", "unknown"),
    ]
    totals = run.totals()
    assert totals.sent == ["ada@example.org"]
    assert totals.failed == {"bob@example.org": "550 5.1.1 no such user"}
    assert totals.unknown == {"cy@example.org": "after the message was sent: timeout"}
    # Sent (and unknown: the server may have it) never offer their papers again.
    assert store.sent_ids(ada.key) == {"2605.00000", "2605.00001"}
    assert store.sent_ids(cy.key) == {"2605.00000", "2605.00001"}
    assert store.sent_ids(bob.key) == frozenset()
    # The address failed: bob's row is bounced, and says why.
    bounced = store.subscriber_by_email("bob@example.org")
    assert bounced is not None
    assert (bounced.status, bounced.reason) == ("bounced", "550 5.1.1 no such user")
    assert [r.key for r in store.subscribers(["bounced"])] == ["bob@example.org"]
    run.close()
    assert ledger.open_run(store, DAY, clock).due(retry_unknown=False, daily_cap=None) == []
    assert [r.subscriber for r in run.due(retry_unknown=True, daily_cap=None)] == ["cy@example.org"]


def test_the_papers_a_message_carried_are_the_ones_recorded(store: Store) -> None:
    ada = subscriber("ada")
    run = ledger.open_run(store, DAY, Clock())
    run.freeze([digest(ada, [0, 1, 2])], send_empty=False)
    rows = run.due(retry_unknown=False, daily_cap=None)
    (frozen,) = run.digests(rows, [ada], [ada.key], run.papers())
    # The size guard left the last paper out: it stays unsent, for a later digest.
    trimmed = Digest(ada, DAY, frozen.picks[:2])
    run.recorder(rows, max_deferrals=3).finished(outgoing(trimmed), Outcome("sent", "250"))
    assert store.sent_ids(ada.key) == {"2605.00000", "2605.00001"}


def test_a_send_that_dies_in_flight_leaves_unknown_rows_for_the_next_one(
    store: Store,
) -> None:
    ada, bob = subscriber("ada"), subscriber("bob")
    run = ledger.open_run(store, DAY, Clock())
    run.freeze([digest(ada), digest(bob)], send_empty=False)
    rows = run.due(retry_unknown=False, daily_cap=None)
    (first, _) = run.digests(rows, [ada, bob], [ada.key, bob.key], run.papers())
    run.recorder(rows, max_deferrals=3).started(outgoing(first))  # then the process dies
    assert statuses(store, run)["ada@example.org"] == "sending"

    resumed = ledger.open_run(store, DAY, Clock())
    assert statuses(store, resumed) == {"ada@example.org": "unknown", "bob@example.org": "pending"}
    sender = ScriptedSender()
    send(resumed, [ada, bob], sender)
    assert sender.sent == ["bob@example.org"]  # never twice, unless asked
    send(resumed, [ada, bob], sender, retry_unknown=True)
    assert sender.sent == ["bob@example.org", "ada@example.org"]


def test_a_later_days_run_supersedes_what_earlier_runs_left(store: Store) -> None:
    ada, bob = subscriber("ada"), subscriber("bob")
    clock = Clock()
    earlier = ledger.open_run(store, DAY - dt.timedelta(days=1), clock)
    earlier.freeze([digest(ada, day=earlier.day), digest(bob, day=earlier.day)], send_empty=False)
    send(earlier, [bob], ScriptedSender({"bob@example.org": Outcome("deferred", "451")}))
    today = ledger.open_run(store, DAY, clock)
    assert statuses(store, earlier) == {
        "ada@example.org": "cancelled",
        "bob@example.org": "cancelled",
    }
    assert today.missing([ada, bob]) == [ada, bob]


def test_the_daily_cap_counts_what_went_out_today(store: Store) -> None:
    people = [subscriber(n) for n in ("ada", "bob", "cy", "dan", "eve")]
    run = ledger.open_run(store, DAY, Clock())
    run.freeze([digest(s) for s in people], send_empty=False)
    sender = ScriptedSender()
    send(run, people, sender, daily_cap=2)
    assert sender.sent == ["ada@example.org", "bob@example.org"]
    send(run, people, sender, daily_cap=3)  # the same day: one more
    assert sender.sent[2:] == ["cy@example.org"]
    assert run.totals().pending == 2
    tomorrow = Clock(T0 + dt.timedelta(days=1))
    later = ledger.open_run(store, DAY, tomorrow)
    send(later, people, sender, daily_cap=3)
    assert sender.sent[3:] == ["dan@example.org", "eve@example.org"]


def test_a_subscriber_who_left_is_cancelled_one_not_due_now_waits(store: Store) -> None:
    ada, bob, cy = subscriber("ada"), subscriber("bob"), subscriber("cy")
    run = ledger.open_run(store, DAY, Clock())
    run.freeze([digest(ada), digest(bob), digest(cy)], send_empty=False)
    sender = ScriptedSender()
    # ada sends now; bob was removed from the file; cy unsubscribed (the roster mails ada
    # only); nobody else is due.
    send(run, [ada], sender, configured=[ada.key])
    assert sender.sent == ["ada@example.org"]
    assert statuses(store, run) == {
        "ada@example.org": "sent",
        "bob@example.org": "cancelled",
        "cy@example.org": "cancelled",
    }
    later = ledger.open_run(store, DAY, Clock())
    later.freeze([digest(subscriber("dan"))], send_empty=False)
    send(later, [], sender, configured=["dan@example.org"])  # dan is configured, not due now
    assert statuses(store, later)["dan@example.org"] == "pending"


def test_a_recipient_deferred_by_too_many_runs_fails(store: Store) -> None:
    ada = subscriber("ada")
    run = ledger.open_run(store, DAY, Clock())
    run.freeze([digest(ada)], send_empty=False)
    refused = ScriptedSender({"ada@example.org": Outcome("deferred", "451 later")})
    for _ in range(2):
        send(run, [ada], refused, max_deferrals=2)
        assert statuses(store, run) == {"ada@example.org": "deferred"}
    recorder = send(run, [ada], refused, max_deferrals=2)
    assert recorder.counts == {"failed": 1}
    assert run.totals().failed == {"ada@example.org": "451 later (still refused after 3 runs)"}


def test_a_test_send_reads_the_frozen_digest_back(store: Store) -> None:
    ada, bob, cy, dan = (subscriber(n) for n in ("ada", "bob", "cy", "dan"))
    run = ledger.open_run(store, DAY, Clock())
    run.freeze([digest(ada, [3]), digest(bob, []), digest(cy)], send_empty=False)
    send(run, [ada], ScriptedSender(), configured=[ada.key, bob.key])  # cy: removed, cancelled
    found = ledger.frozen_for_test(store, DAY, [ada, bob, cy, dan], send_empty=False)
    assert [(f.subscriber, f.status) for f in found] == [(ada, "sent"), (bob, "empty")]
    assert found[0].digest is not None and found[0].digest.paper_ids == ("2605.00003",)
    assert found[1].digest is None  # nothing new: no email
    (with_empty,) = ledger.frozen_for_test(store, DAY, [bob], send_empty=True)
    assert with_empty.digest is not None and with_empty.digest.picks == ()
