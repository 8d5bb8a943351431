"""The real test servers work: PostgreSQL (row locks, SKIP LOCKED, advisory locks, a password),
Dovecot (log in, append, fetch), and Postfix accepting a message with 250 then bouncing it,
its DSN landing in the Dovecot mailbox of the VERP address. And a server always stops."""

from __future__ import annotations

import email
import email.policy
import imaplib
from email.message import EmailMessage, Message

import psycopg
import pytest

from tests.conftest import require
from tests.servers import dovecot, postfix
from tests.servers.dovecot import Dovecot, Mailbox
from tests.servers.postfix import Postfix
from tests.servers.postgres import PASSWORD, Database
from tests.servers.process import living, port_open

pytest_plugins = ["tests.servers.fixtures"]


def test_postgres_rows_claimed_with_skip_locked_go_to_one_worker(postgres_db: Database) -> None:
    with psycopg.connect(postgres_db.url, autocommit=True) as setup:
        setup.execute("CREATE TABLE jobs (id int PRIMARY KEY, owner text)")
        setup.execute("INSERT INTO jobs SELECT g, NULL FROM generate_series(1, 10) g")
    claim = "SELECT id FROM jobs ORDER BY id LIMIT 4 FOR UPDATE SKIP LOCKED"
    with psycopg.connect(postgres_db.url) as a, psycopg.connect(postgres_db.url) as b:
        first = [r[0] for r in a.execute(claim).fetchall()]  # a's transaction holds these
        second = [r[0] for r in b.execute(claim).fetchall()]
        assert first == [1, 2, 3, 4]
        assert second == [5, 6, 7, 8]  # skipped a's rows instead of waiting for them
        with pytest.raises(psycopg.errors.LockNotAvailable):
            b.execute("SELECT id FROM jobs WHERE id = 1 FOR UPDATE NOWAIT")
        b.rollback()
        a.commit()  # a's locks are released: b now gets the first rows
        assert [r[0] for r in b.execute(claim).fetchall()] == [1, 2, 3, 4]


def test_postgres_advisory_lock_is_held_by_one_session(postgres_db: Database) -> None:
    with (
        psycopg.connect(postgres_db.url, autocommit=True) as a,
        psycopg.connect(postgres_db.url, autocommit=True) as b,
    ):
        lock = "SELECT pg_try_advisory_lock(42)"
        assert a.execute(lock).fetchone() == (True,)
        assert b.execute(lock).fetchone() == (False,)
        a.execute("SELECT pg_advisory_unlock(42)")
        assert b.execute(lock).fetchone() == (True,)


def test_postgres_each_test_gets_an_empty_database(postgres_db: Database) -> None:
    # The other tests made a ``jobs`` table in their own database: not in this one.
    with psycopg.connect(postgres_db.url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
        assert conn.execute("SELECT current_user").fetchone() == ("newsletter",)


def test_postgres_password_role_needs_its_password(postgres_db: Database) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(postgres_db.password_url, connect_timeout=10).close()
    with psycopg.connect(postgres_db.password_url, password=PASSWORD) as conn:
        conn.execute("CREATE TABLE t (x int)")  # may write: a member of the database's owner
        assert conn.execute("SELECT current_user").fetchone() == ("newsletter_pw",)


def message(to: str, subject: str = "A digest") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Papers <papers@example.org>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@example.org>"
    msg.set_content("Three papers today.\n")
    return msg.as_bytes()


def test_dovecot_append_then_fetch(mailbox: Mailbox) -> None:
    raw = message(mailbox.address, "Hello IMAP")
    mailbox.append(raw)
    mailbox.append(message(mailbox.address, "Done"), folder="processed")
    assert mailbox.folders() == ["INBOX", "processed"]
    [got] = mailbox.messages()
    assert email.message_from_bytes(got)["Subject"] == "Hello IMAP"
    assert got.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
    assert [email.message_from_bytes(m)["Subject"] for m in mailbox.messages("processed")] == [
        "Done"
    ]


def test_dovecot_accounts_are_apart_and_need_their_password(
    dovecot_server: Dovecot, mailbox: Mailbox
) -> None:
    other = dovecot_server.add_user()
    other.append(message(other.address))
    assert mailbox.messages() == []
    assert len(other.messages()) == 1
    conn = imaplib.IMAP4(mailbox.host, mailbox.port, timeout=30)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            conn.login(mailbox.address, "wrong")
    finally:
        conn.shutdown()


def report_of(raw: bytes) -> tuple[Message, list[Message]]:
    """A DSN's message and its per-recipient field groups (message/delivery-status)."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            groups = [g for g in part.get_payload() if isinstance(g, Message)]
            return msg, groups[1:]  # the first group is about the message, the rest recipients
    raise AssertionError(f"no message/delivery-status part in:\n{raw.decode(errors='replace')}")


def test_postfix_accepts_then_bounces_and_the_dsn_reaches_the_verp_mailbox(
    postfix_relay: Postfix, mailbox: Mailbox
) -> None:
    local, domain = mailbox.address.split("@")
    verp = f"{local}+abc123@{domain}"

    refused = postfix_relay.send(verp, ["someone@bounce.test"], message("someone@bounce.test"))

    assert refused == {}  # accepted with 250: the failure comes afterwards
    [dsn] = mailbox.wait_for_messages(1, timeout=60, poll=postfix_relay.flush)
    msg, recipients = report_of(dsn)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["To"] == verp  # Postfix's own bounce, to the envelope sender
    assert msg["From"].startswith("Mail Delivery System <MAILER-DAEMON@")
    [rcpt] = recipients
    assert rcpt["Final-Recipient"] == "rfc822; someone@bounce.test"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"


def test_postfix_sends_nothing_out_and_delivers_plus_addresses(
    postfix_relay: Postfix, mailbox: Mailbox
) -> None:
    local, domain = mailbox.address.split("@")
    # Any other destination bounces (5.4.6) instead of leaving the machine; the "mailbox full"
    # destination bounces with its own status; a +detail address reaches the base mailbox.
    postfix_relay.send(f"{local}+out@{domain}", ["x@elsewhere.test"], message("x@elsewhere.test"))
    postfix_relay.send(f"{local}+full@{domain}", ["y@full.test"], message("y@full.test"))
    postfix_relay.send(
        "papers@example.org", [f"{local}+detail@{domain}"], message(mailbox.address, "Plain")
    )

    found = mailbox.wait_for_messages(3, timeout=60, poll=postfix_relay.flush)

    subjects = sorted(email.message_from_bytes(m)["Subject"] for m in found)
    assert subjects == ["Plain", *["Undelivered Mail Returned to Sender"] * 2]
    statuses = {}
    for raw in found:
        if email.message_from_bytes(raw).get_content_type() == "multipart/report":
            _, [rcpt] = report_of(raw)
            statuses[rcpt["Final-Recipient"]] = rcpt["Status"]
    assert statuses == {"rfc822; x@elsewhere.test": "5.4.6", "rfc822; y@full.test": "5.2.2"}
    assert postfix_relay.queue_ids() == []


def test_servers_stop_and_leave_nothing_when_the_block_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for reason in (dovecot.missing(), postfix.missing()):
        require(reason is None, reason or "")
    monkeypatch.delenv("NEWSLETTER_KEEP_SERVERS", raising=False)
    with pytest.raises(RuntimeError), Dovecot() as imap, Postfix(imap.lmtp_port) as relay:
        servers = [imap, relay]
        assert imap.proc is not None and relay.proc is not None
        groups = [imap.proc.pid, relay.proc.pid]
        ports = [imap.port, imap.lmtp_port, relay.port]
        assert all(port_open(p) for p in ports)
        raise RuntimeError("a failing test")
    for server in servers:
        assert server.proc is None
        assert not server.root.exists()
    assert [pid for group in groups for pid in living(group)] == []  # and all they forked
    assert not any(port_open(p) for p in ports)
