"""``inbound.handle``: who a message is about (VERP and unsubscribe tokens, else the report) and
what changes, on a real SQLite state: suppress, count in time, complain, unsubscribe; forged
and altered tokens change nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.inbound import unsubscribe_address, verp_address
from newsletter.inbound.handle import Handled, Rules, handle, smtp_refusal
from newsletter.models import SubscriberRecord
from newsletter.store import SqliteStore
from tests import inbound_mail as mail
from tests.smtpserver import Faults, SmtpServer
from tests.test_send import make_config, send

KEY = b"inbound-test-key-of-at-least-32-bytes!"
OLD_KEY = b"an-older-key-still-verifying-tokens!!"
OTHER_KEY = b"someone-elses-key-of-at-least-32-bytes"
NOW = dt.datetime(2026, 5, 8, 9, 0, tzinfo=dt.UTC)
RULES = Rules(soft_bounces=3, soft_days=14, bounce_address="bounces@example.org")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "state.db") as s:
        yield s


def add(store: SqliteStore, email: str) -> str:
    record = SubscriberRecord(email=email, topics=("ml",), status="active", source="cli")
    return store.add_subscriber(record, now=NOW).id


def status(store: SqliteStore, email: str) -> str:
    record = store.subscriber_by_email(email)
    assert record is not None
    return record.status


def run(
    store: SqliteStore,
    raw: bytes,
    envelope_to: str | None = None,
    *,
    now: dt.datetime = NOW,
    dry_run: bool = False,
    keys: tuple[bytes, ...] = (KEY,),
) -> Handled:
    to = (envelope_to,) if envelope_to else ()
    return handle(raw, to, store=store, keys=keys, rules=RULES, now=now, dry_run=dry_run)


def verp(subscriber: str, run_id: int = 7, key: bytes = KEY) -> str:
    return verp_address("bounces@example.org", run_id, subscriber, key)


def unsubscribe(subscriber: str, key: bytes = KEY) -> str:
    return unsubscribe_address("unsubscribe@example.org", subscriber, key)


def test_a_permanent_failure_suppresses_the_verp_subscriber_at_once(store: SqliteStore) -> None:
    ada = add(store, "ada@example.org")
    add(store, "bob@example.org")
    to = verp(ada)
    # The report names another address (a forward): the token says whom it was for.
    handled = run(store, mail.dsn(to, "ada.lovelace@mx.example.net"), to)
    assert handled.as_json() == {
        "kind": "bounce",
        "permanent": True,
        "recipients": ["ada.lovelace@mx.example.net"],
        "status": "5.1.1",
        "action": "suppressed",
    }
    assert status(store, "ada@example.org") == "bounced"
    assert status(store, "bob@example.org") == "active"
    assert store.inbound_counts()[ada] == {"hard": 1}


def test_the_envelope_address_may_come_from_the_headers_and_in_any_case(
    store: SqliteStore,
) -> None:
    ada = add(store, "ada@example.org")
    to = verp(ada).upper()  # a mail system folded the case of the local part
    assert run(store, mail.dsn(to, "ada@example.org")).action == "suppressed"
    assert status(store, "ada@example.org") == "bounced"


def test_soft_failures_suppress_only_when_enough_fall_within_the_days(
    store: SqliteStore,
) -> None:
    ada = add(store, "ada@example.org")
    full = mail.dsn(verp(ada), "ada@example.org", "5.2.2", "smtp; 552 5.2.2 Mailbox full")
    day = dt.timedelta(days=1)
    # Two failures, then the third 15 days after the first: the first has left the window.
    assert run(store, full, now=NOW).action == "counted"
    assert run(store, full, now=NOW + day).action == "counted"
    assert run(store, full, now=NOW + 15 * day).action == "counted"
    assert status(store, "ada@example.org") == "active"
    # Now the 2nd, 3rd and 4th are within 14 days of the 4th.
    handled = run(store, full, now=NOW + 15 * day + dt.timedelta(hours=1))
    assert (handled.permanent, handled.status, handled.action) == (False, "5.2.2", "counted")
    assert status(store, "ada@example.org") == "active"
    assert run(store, full, now=NOW + 16 * day).action == "suppressed"
    assert status(store, "ada@example.org") == "bounced"
    assert store.inbound_counts()[ada] == {"soft": 5}


def test_a_delay_warning_counts_nothing(store: SqliteStore) -> None:
    ada = add(store, "ada@example.org")
    delayed = mail.dsn(verp(ada), "ada@example.org", "4.4.1", "smtp; 451 try later", "delayed")
    for _ in range(4):
        assert run(store, delayed).action == "none"
    assert status(store, "ada@example.org") == "active"
    assert ada not in store.inbound_counts()


def test_a_dry_run_changes_nothing_and_says_what_would_happen(store: SqliteStore) -> None:
    ada = add(store, "ada@example.org")
    handled = run(store, mail.dsn(verp(ada), "ada@example.org"), dry_run=True)
    assert handled.action == "suppressed"
    assert status(store, "ada@example.org") == "active"
    assert store.inbound_counts() == {}


def test_a_complaint_names_its_subscriber_by_the_token_in_the_enclosed_original(
    store: SqliteStore,
) -> None:
    ada = add(store, "ada@example.org")
    # Feedback loops redact the recipient; the enclosed original keeps its Return-Path.
    original = (
        b"Return-Path: <"
        + verp(ada).encode()
        + b">\n"
        + mail.plain("redacted@isp.example.net", "Papers", "papers@example.org")
    )
    handled = run(store, mail.arf("fbl@example.org", original), "fbl@example.org")
    assert (handled.kind, handled.action) == ("complaint", "suppressed")
    assert status(store, "ada@example.org") == "complained"
    assert store.inbound_counts()[ada] == {"complaint": 1}


def test_a_complaint_without_a_token_falls_back_to_a_subscriber_it_names(
    store: SqliteStore,
) -> None:
    add(store, "ada@example.org")
    original = mail.plain("ada@example.org", "Papers", "papers@example.org")
    opt_out = mail.arf("fbl@example.org", original, feedback_type="opt-out")
    assert run(store, opt_out).action == "suppressed"
    assert status(store, "ada@example.org") == "complained"
    stranger = mail.arf("fbl@example.org", mail.plain("eve@example.org", "Papers", "x@y.org"))
    assert run(store, stranger).as_json()["action"] == "none"


def test_a_message_to_the_unsubscribe_address_unsubscribes(store: SqliteStore) -> None:
    ada = add(store, "ada@example.org")
    to = unsubscribe(ada)
    assert run(store, mail.auto_reply(to), to).action == "none"  # an out-of-office: not a request
    handled = run(store, mail.plain(to, "Unsubscribe"), to)
    assert handled.as_json() == {
        "kind": "unsubscribe",
        "permanent": None,
        "recipients": ["ada@example.org"],
        "status": None,
        "action": "unsubscribed",
    }
    assert status(store, "ada@example.org") == "unsubscribed"
    # A bounce later does not overwrite the reader's choice, though it is recorded.
    assert run(store, mail.dsn(verp(ada), "ada@example.org"), verp(ada)).action == "suppressed"
    assert status(store, "ada@example.org") == "unsubscribed"


def test_every_key_verifies_tokens(store: SqliteStore) -> None:
    ada = add(store, "ada@example.org")
    to = unsubscribe(ada, key=OLD_KEY)  # signed before the key was rotated
    assert run(store, mail.plain(to), to, keys=(KEY, OLD_KEY)).action == "unsubscribed"


def _altered(address: str) -> str:
    local, _, domain = address.partition("@")
    last = local[-1]
    return f"{local[:-1]}{'b' if last == 'a' else 'a'}@{domain}"


def _truncated(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:-2]}@{domain}"


@pytest.mark.parametrize("how", ["altered", "truncated", "another key", "unsubscribe as verp"])
def test_forged_or_altered_tokens_change_nothing(store: SqliteStore, how: str) -> None:
    ada = add(store, "ada@example.org")
    bob = add(store, "bob@example.org")
    forged_verp = {
        "altered": _altered(verp(ada)),
        "truncated": _truncated(verp(ada)),
        "another key": verp(ada, key=OTHER_KEY),
        # an unsubscribe token's body under the bounce address: its MAC is for another purpose
        "unsubscribe as verp": "bounces+" + unsubscribe(ada).split("+", 1)[1],
    }[how]
    forged_unsubscribe = {
        "altered": _altered(unsubscribe(bob)),
        "truncated": _truncated(unsubscribe(bob)),
        "another key": unsubscribe(bob, key=OTHER_KEY),
        "unsubscribe as verp": "unsubscribe+" + verp(bob).split("+", 1)[1],
    }[how]
    # The report names a real subscriber: it must not be believed beside a broken token.
    bounce = run(store, mail.dsn(forged_verp, "ada@example.org"), forged_verp)
    leave = run(store, mail.plain(forged_unsubscribe), forged_unsubscribe)
    assert (bounce.action, leave.action) == ("none", "none")
    assert status(store, "ada@example.org") == status(store, "bob@example.org") == "active"
    assert store.inbound_counts() == {}


def test_without_a_token_the_report_names_the_subscriber(store: SqliteStore) -> None:
    add(store, "ada@example.org")
    # Bounced to the From address (some systems ignore the envelope): no token at all.
    assert run(store, mail.dsn("papers@example.org", "ada@example.org")).action == "suppressed"
    assert status(store, "ada@example.org") == "bounced"
    assert run(store, mail.dsn("papers@example.org", "nobody@example.org")).action == "none"


def test_a_subscribers_own_plus_address_is_not_a_token_of_ours(store: SqliteStore) -> None:
    add(store, "ada+papers@example.org")
    report = mail.dsn("papers@example.org", "ada+papers@example.org")
    assert run(store, report, "ada+papers@example.org").action == "suppressed"
    assert status(store, "ada+papers@example.org") == "bounced"


def test_a_5xx_to_rcpt_is_judged_by_the_same_rules(store: SqliteStore) -> None:
    add(store, "ada@example.org")
    add(store, "bob@example.org")
    for when in range(3):
        refused = smtp_refusal(
            store,
            "bob@example.org",
            "5.2.2 <bob@example.org>: mailbox full",
            permanent=False,
            rules=RULES,
            run_id=1,
            now=NOW + dt.timedelta(days=when),
        )
        assert refused.action == ("suppressed" if when == 2 else "counted")
    gone = smtp_refusal(
        store,
        "ada@example.org",
        "5.1.1 <ada@example.org>: user unknown",
        permanent=True,
        rules=RULES,
        run_id=1,
        now=NOW,
    )
    assert gone.action == "suppressed"
    assert status(store, "ada@example.org") == status(store, "bob@example.org") == "bounced"


def test_a_soft_5xx_to_rcpt_in_a_real_send_is_counted_until_it_suppresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", KEY.decode())
    full = "reader001@example.org"
    with SmtpServer(Faults(rcpt_replies={full: "552 5.2.2 Mailbox full"})) as server:
        cfg = make_config(
            tmp_path,
            server.port,
            n=2,
            extra="inbound:\n  soft_bounces: 2\nselection:\n  send_empty: true",
        )
        first = send(cfg)
        assert first.exit_code == 1, first.output
        assert f"failed: {full}: 552 5.2.2 Mailbox full" in first.output
        with SqliteStore(tmp_path / "state.db", read_only=True) as store:
            assert status(store, full) == "active"  # counted: one of two
        second = send(cfg, "--date", "2026-05-09")
        assert second.exit_code == 1, second.output
        with SqliteStore(tmp_path / "state.db", read_only=True) as store:
            assert status(store, full) == "bounced"
            record = store.subscriber_by_email(full)
            assert record is not None and store.inbound_counts()[record.id] == {"soft": 2}
        third = send(cfg, "--date", "2026-05-10")
        assert third.exit_code == 0, third.output
    assert server.handler.count()["reader000@example.org"] == 3
    assert full not in server.handler.count()
