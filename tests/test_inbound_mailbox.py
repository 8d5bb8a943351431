"""Bounces, complaints and mailto unsubscribes read back over IMAP, end to end: ``send``
through a real Postfix that accepts a digest with 250 and bounces it afterwards, Postfix's own
DSN delivered to the VERP address's Dovecot mailbox, ``serve``'s IMAP poll reading it."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter import config
from newsletter.config import ImapSettings
from newsletter.inbound.imap import read_mailbox
from newsletter.store import SqliteStore
from tests import inbound_mail as mail
from tests.clock import FakeClock
from tests.httpserver import FixtureServer
from tests.servers.dovecot import Dovecot, Mailbox
from tests.servers.postfix import Postfix
from tests.smtpserver import free_port
from tests.test_serve import ENV, cli, daemon_in_process, wait_for
from tests.test_serve import hf as hf  # the fixture: today's list is a real capture

pytest_plugins = ["tests.servers.fixtures"]

IMAP_ENV = "TEST_IMAP_PASSWORD"


def write_config(
    path: Path,
    hf: FixtureServer,
    relay: Postfix,
    bounces: Mailbox,
    subscribers: list[str],
    after: str = "move",
) -> Path:
    subs = "".join(
        f"  - email: {a}\n    topics: [everything]\n    max_papers: 2\n" for a in subscribers
    )
    path.write_text(
        f"""\
newsletter:
  from: "Test Papers <papers@example.org>"
  base_url: http://127.0.0.1:{free_port()}
  state: state.db
sources:
  huggingface:
    base_url: {hf.url}
    retries: 0
smtp:
  host: {relay.host}
  port: {relay.port}
  security: none
  retry_backoff: 0
  bounce_address: {bounces.address}
inbound:
  imap:
    host: {bounces.host}
    port: {bounces.port}
    security: none
    username: {bounces.address}
    password_env: {IMAP_ENV}
    after: {after}
server:
  host: 127.0.0.1
  port: {free_port()}
topics:
  everything:
    keywords: [the, we]
subscribers:
{subs}""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def imap_password(mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(IMAP_ENV, mailbox.password)
    yield mailbox.password


def statuses(cfg: Path) -> dict[str, str]:
    with SqliteStore(cfg.parent / "state.db", read_only=True) as store:
        return {r.email: r.status for r in store.subscribers()}


def header(raw: bytes, name: str) -> str:
    return str(email.message_from_bytes(raw, policy=email.policy.compat32)[name] or "")


def serve_until_read(cfg: Path, mailbox: Mailbox) -> None:
    """What ``serve`` runs, in this process: its poll reads the mailbox as it starts."""
    with daemon_in_process(cfg, FakeClock(dt.datetime.now(dt.UTC))):
        wait_for(lambda: mailbox.messages() == [], 60, lambda: "the mailbox was not read")


def test_a_digest_bounced_after_250_a_complaint_and_a_mailto_unsubscribe_come_back(
    tmp_path: Path,
    hf: FixtureServer,
    postfix_relay: Postfix,
    dovecot_server: Dovecot,
    mailbox: Mailbox,
    imap_password: str,
) -> None:
    complainer, leaver = dovecot_server.add_user(), dovecot_server.add_user()
    cfg = write_config(
        tmp_path / "c.yaml",
        hf,
        postfix_relay,
        mailbox,
        ["gone@bounce.test", complainer.address, leaver.address, "full@full.test"],
    )
    sent = cli(cfg, "send")
    assert sent.returncode == 0, sent.stdout + sent.stderr  # all four accepted with 250

    # Postfix's own bounces, to the VERP addresses; the readers' digests in their mailboxes.
    dsns = mailbox.wait_for_messages(2, timeout=60, poll=postfix_relay.flush)
    assert len(dsns) == 2
    local, domain = mailbox.address.split("@")
    verp = re.compile(rf"{re.escape(local)}\+[a-z2-7]+@{re.escape(domain)}")
    assert all(verp.fullmatch(header(d, "To")) for d in dsns), [header(d, "To") for d in dsns]
    [to_complainer] = complainer.wait_for_messages(1, timeout=60, poll=postfix_relay.flush)
    [to_leaver] = leaver.wait_for_messages(1, timeout=60, poll=postfix_relay.flush)
    mailto = re.search(r"<mailto:([^?>]+)", header(to_leaver, "List-Unsubscribe"))
    assert mailto is not None
    assert re.fullmatch(rf"unsubscribe\+[a-z2-7]+@{re.escape(domain)}", mailto[1]), mailto[1]
    assert len(mailto[1].split("@")[0]) <= 64

    # A feedback loop's complaint about the digest, and a mail client's unsubscribe, arrive in
    # the same mailbox.
    mailbox.append(mail.arf(mailbox.address, to_complainer))
    mailbox.append(mail.plain(mailto[1], "Unsubscribe", leaver.address))
    assert statuses(cfg) == dict.fromkeys(
        ["gone@bounce.test", complainer.address, leaver.address, "full@full.test"], "active"
    )

    serve_until_read(cfg, mailbox)

    assert statuses(cfg) == {
        "gone@bounce.test": "bounced",  # 5.1.1: at once
        complainer.address: "complained",
        leaver.address: "unsubscribed",
        "full@full.test": "active",  # 5.2.2: counted, one of three
    }
    with SqliteStore(cfg.parent / "state.db", read_only=True) as store:
        counts = {store.subscriber_by_id(i).email: c for i, c in store.inbound_counts().items()}  # type: ignore[union-attr]
    assert counts == {
        "gone@bounce.test": {"hard": 1},
        "full@full.test": {"soft": 1},
        complainer.address: {"complaint": 1},
        leaver.address: {"unsubscribe": 1},
    }
    assert mailbox.messages() == []
    assert len(mailbox.messages("processed")) == 4
    assert "processed" in mailbox.folders()


def test_a_message_that_fails_stays_and_is_reported_once(
    mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ImapSettings(
        host=mailbox.host,
        port=mailbox.port,
        security="none",
        username=mailbox.address,
        password_env="UNUSED",
    )
    mailbox.append(mail.dsn(mailbox.address, "ada@example.org"))
    mailbox.append(mail.plain(mailbox.address))
    failing = {"tries": 0}

    def broken(raw: bytes) -> None:  # the state cannot be written
        failing["tries"] += 1
        raise OSError("database is locked")

    reported: set[str] = set()
    with caplog.at_level(logging.ERROR, logger="newsletter.inbound.imap"):
        first = read_mailbox(settings, mailbox.password, broken, reported=reported)
        second = read_mailbox(settings, mailbox.password, broken, reported=reported)
    assert (len(first.failed), len(first.new_failures)) == (2, 2)
    assert (len(second.failed), second.new_failures) == (2, [])
    assert len([r for r in caplog.records if "imap_failed" in r.getMessage()]) == 2
    assert failing["tries"] == 4
    assert len(mailbox.messages()) == 2  # left for the next poll

    handled: list[bytes] = []
    done = read_mailbox(settings, mailbox.password, handled.append, reported=reported)
    assert (done.handled, done.failed) == (2, {})
    assert reported == set()
    assert mailbox.messages() == [] and len(mailbox.messages("processed")) == 2


def test_inbound_imap_does_one_pass_for_cron_and_may_delete(
    tmp_path: Path,
    hf: FixtureServer,
    postfix_relay: Postfix,
    mailbox: Mailbox,
    imap_password: str,
) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", hf, postfix_relay, mailbox, ["ada@example.net"], after="delete"
    )
    with SqliteStore(tmp_path / "state.db") as store:
        store.sync_file_subscribers(config.load(cfg).subscriber_models(), dt.datetime.now(dt.UTC))
    # Bounced to the bounce address itself, without a token: the report names the subscriber.
    mailbox.append(mail.dsn(mailbox.address, "ada@example.net"))
    mailbox.append(mail.auto_reply(mailbox.address))
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "inbound", "--imap", "-c", str(cfg)],
        env={**ENV, IMAP_ENV: imap_password},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "handled 2 messages\n"
    assert statuses(cfg) == {"ada@example.net": "bounced"}
    assert mailbox.messages() == [] and mailbox.folders() == ["INBOX"]


def test_a_wrong_imap_password_exits_75_with_one_line(
    tmp_path: Path, hf: FixtureServer, postfix_relay: Postfix, mailbox: Mailbox
) -> None:
    cfg = write_config(tmp_path / "c.yaml", hf, postfix_relay, mailbox, ["ada@example.net"])
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "inbound", "--imap", "-c", str(cfg)],
        env={**ENV, IMAP_ENV: "not-the-password-1f3c"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 75, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert f"login as {mailbox.address} refused" in done.stderr
    assert "not-the-password-1f3c" not in done.stderr


def test_serve_refuses_an_imap_mailbox_without_its_password(
    tmp_path: Path, hf: FixtureServer, postfix_relay: Postfix, mailbox: Mailbox
) -> None:
    cfg = write_config(tmp_path / "c.yaml", hf, postfix_relay, mailbox, ["ada@example.net"])
    done = cli(cfg, "serve")  # returns at once: the password is checked before anything starts
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"{cfg}: inbound.imap.password_env: ${IMAP_ENV} is not set "
        f"(inbound.imap.username is {mailbox.address!r})\n"
    )
