"""`newsletter send` against a real SMTP server (aiosmtpd) on 127.0.0.1 and a real SQLite file."""

from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from newsletter import compose, wiring
from newsletter import config as config_mod
from newsletter.cli import cli
from newsletter.ledger import CLAIM_BATCH
from newsletter.store import SqliteStore, open_store
from newsletter.web import tokens
from tests.conftest import fixture_path, held
from tests.servers.postgres import Database
from tests.smtpserver import Faults, SmtpServer, make_test_ca, password_authenticator

pytest_plugins = ["tests.servers.fixtures"]

DAY = "2026-05-08"
SAVED = fixture_path("hf_api_daily_papers_date_2026-05-08_37papers.json")


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", "test-signing-key-of-at-least-32-bytes")


def addresses(n: int) -> list[str]:
    return [f"reader{i:03d}@example.org" for i in range(n)]


def make_config(
    tmp_path: Path,
    port: int,
    n: int = 5,
    smtp: str = "",
    extra: str = "",
    weekly: int = 0,
    state: str = "state.db",
) -> Path:
    subs = "".join(
        f"  - email: {a}\n    topics: [everything]\n    max_papers: 2\n"
        + ("    cadence: weekly\n" if i < weekly else "")
        for i, a in enumerate(addresses(n))
    )
    path = tmp_path / "subs.yaml"
    path.write_text(
        f"""\
newsletter:
  from: "Test Papers <papers@example.org>"
  state: {state}
smtp:
  host: 127.0.0.1
  port: {port}
  security: none
  retry_backoff: 0
  timeout: 5
{smtp}
{extra}
topics:
  everything:
    keywords: [the, we]
subscribers:
{subs}""",
        encoding="utf-8",
    )
    return path


def send(cfg: Path, *args: str) -> Result:
    return CliRunner().invoke(
        cli, ["send", "-c", str(cfg), "--from", str(SAVED), "--date", DAY, *args]
    )


def ledger(tmp_path: Path) -> Counter[str]:
    """The ledger's rows by status, in the state the test's config names (either backend)."""
    with wiring.open_state(config_mod.load(tmp_path / "subs.yaml"), read_only=True) as store:
        rows = store.db.execute("SELECT status, COUNT(*) FROM ledger GROUP BY status").fetchall()
    return Counter(dict(rows))


def test_a_send_of_several_claimed_batches_composes_with_one_composer(
    tmp_path: Path, postgres_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[object] = []
    making = compose.Composer.__init__

    def counted(self: compose.Composer, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        making(self, *args, **kwargs)

    monkeypatch.setattr(compose.Composer, "__init__", counted)
    n = CLAIM_BATCH * 2 + 10  # three claims on PostgreSQL, each composed in this process
    with SmtpServer(keep_data=False) as server:
        result = send(make_config(tmp_path, server.port, n=n, state=postgres_db.url))
        assert result.exit_code == 0, result.output
        assert sorted(server.handler.count()) == addresses(n)
    # One for the batches (its templates compiled once), not one per claimed batch.
    assert len(made) == 1


def test_send_delivers_once_and_a_second_run_sends_nothing(tmp_path: Path, store_url: str) -> None:
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port, state=store_url)
        result = send(cfg)
        assert result.exit_code == 0, result.output
        assert "  sent               5" in result.output
        assert sorted(server.handler.count()) == addresses(5)
        assert ledger(tmp_path) == {"sent": 5}

        again = send(cfg)
        assert again.exit_code == 0, again.output
        assert len(server.received) == 5  # the run for the day is complete

    first = server.received[0]
    assert first.mail_from == "papers@example.org"
    msg = email.message_from_bytes(first.data, policy=email.policy.default)
    assert msg["To"] == first.rcpt_tos[0]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_sent_history_is_written_from_the_ledger(tmp_path: Path) -> None:
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port, n=1)
        assert send(cfg).exit_code == 0
    with SqliteStore(tmp_path / "state.db") as store:
        sent = store.sent_ids("reader000@example.org")
    msg = email.message_from_bytes(server.received[0].data, policy=email.policy.default)
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert len(sent) == 2 and all(pid in html for pid in sent)


def test_temporary_failures_are_retried_until_delivered(tmp_path: Path) -> None:
    faults = Faults(temp_fail_share=0.3, temp_fail_times=2)
    with SmtpServer(faults) as server:
        cfg = make_config(tmp_path, server.port, n=40, smtp="  max_retries: 3")
        result = send(cfg)
        assert result.exit_code == 0, result.output
    counts = server.handler.count()
    assert sorted(counts) == addresses(40) and set(counts.values()) == {1}
    retried = [a for a, n in server.handler.attempts.items() if n > 1]
    assert 5 <= len(retried) <= 20  # about 30% of 40 met a 451 first
    assert ledger(tmp_path) == {"sent": 40}


def test_temporary_failures_beyond_max_retries_are_deferred_then_fail(
    tmp_path: Path, store_url: str
) -> None:
    faults = Faults(temp_fail_share=1.0, temp_fail_times=99)
    with SmtpServer(faults) as server:
        cfg = make_config(
            tmp_path, server.port, n=2, smtp="  max_retries: 2\n  max_deferrals: 1", state=store_url
        )
        first = send(cfg)
        # Not final: the row waits for a later run, which the summary says.
        assert first.exit_code == 0, first.output
        assert re.search(r"^  deferred\s+2$", first.output, re.M), first.output
        assert (
            "deferred: reader000@example.org: 451 4.3.0 Temporary failure, try again "
            "(the next send or run tries again)" in first.output
        )
        assert server.handler.attempts["reader000@example.org"] == 3
        assert ledger(tmp_path) == {"deferred": 2}

        second = send(cfg)  # max_deferrals: 1 run may defer it; the next one that does fails it
    assert second.exit_code == 1, second.output
    assert (
        "failed: reader000@example.org: 451 4.3.0 Temporary failure, try again "
        "(still refused after 2 runs)" in second.output
    )
    assert server.handler.attempts["reader000@example.org"] == 6
    assert ledger(tmp_path) == {"failed": 2}


def test_unknown_recipients_fail_and_are_suppressed(tmp_path: Path) -> None:
    bad = {"reader001@example.org", "reader003@example.org"}
    with SmtpServer(Faults(reject=bad)) as server:
        cfg = make_config(tmp_path, server.port, n=5)
        result = send(cfg)
        assert result.exit_code == 1
        assert "failed: reader001@example.org: 550 5.1.1 No such user here" in result.output
        assert set(server.handler.count()) == set(addresses(5)) - bad
        # The next day's run does not mail them again.
        later = CliRunner().invoke(
            cli, ["send", "-c", str(cfg), "--from", str(SAVED), "--date", "2026-05-09"]
        )
        assert "  bounced            2" in later.output, later.output
    with SqliteStore(tmp_path / "state.db") as store:
        assert set(held(store)) == bad


def test_only_a_refusal_about_the_address_suppresses_it(tmp_path: Path) -> None:
    replies = {
        "reader001@example.org": "550 5.2.2 Mailbox full",  # the mailbox exists
        "reader002@example.org": "554 5.1.1 User unknown",
        "reader003@example.org": "553 5.1.3 Bad recipient address syntax",
        "reader004@example.org": "552 Requested mail action aborted: exceeded storage",
    }
    with SmtpServer(Faults(rcpt_replies=replies)) as server:
        cfg = make_config(tmp_path, server.port, n=5)
        result = send(cfg)
        assert result.exit_code == 1, result.output
        for address, reply in replies.items():
            assert f"failed: {address}: {reply}" in result.output
        assert set(server.handler.count()) == {"reader000@example.org"}
    with SqliteStore(tmp_path / "state.db") as store:
        assert set(held(store)) == {"reader002@example.org", "reader003@example.org"}


def test_policy_rejection_stops_the_run_and_the_rest_resumes_later(
    tmp_path: Path, store_url: str
) -> None:
    faults = Faults(policy_reject={"reader002@example.org"})
    with SmtpServer(faults) as server:
        cfg = make_config(tmp_path, server.port, n=30, smtp="  connections: 1", state=store_url)
        result = send(cfg)
        assert result.exit_code == 1
        assert (
            "stopped: 127.0.0.1:" in result.output
            and "554 5.7.1 Message rejected by policy" in result.output
        )
        assert len(server.received) == 2  # reader000 and reader001, then the stop
        assert ledger(tmp_path)["pending"] == 28
        faults.policy_reject.clear()
        resumed = send(cfg)
        assert resumed.exit_code == 0, resumed.output
    counts = server.handler.count()
    assert sorted(counts) == addresses(30) and set(counts.values()) == {1}


def test_connection_dropped_mid_data_is_unknown_then_retried_on_request(
    tmp_path: Path, store_url: str
) -> None:
    dropped = {"reader001@example.org", "reader004@example.org"}
    with SmtpServer(Faults(drop_data=dropped)) as server:
        cfg = make_config(tmp_path, server.port, n=6, state=store_url)
        result = send(cfg)
        assert result.exit_code == 0, result.output
        assert "  unknown            2" in result.output
        assert "unknown: reader001@example.org" in result.output
        assert len(server.received) == 4
        assert send(cfg).exit_code == 0 and len(server.received) == 4  # not resent by default
        retried = send(cfg, "--retry-unknown")
        assert retried.exit_code == 0, retried.output
    counts = server.handler.count()
    assert sorted(counts) == addresses(6) and set(counts.values()) == {1}


def test_slow_server_times_out_to_unknown(tmp_path: Path) -> None:
    with SmtpServer(Faults(slow={"reader000@example.org": 2.0})) as server:
        cfg = make_config(tmp_path, server.port, n=3, smtp="  timeout: 0.5").read_text()
        path = tmp_path / "subs.yaml"
        path.write_text(cfg.replace("  timeout: 5\n", ""))
        result = send(path)
        assert result.exit_code == 0, result.output
        assert ledger(tmp_path) == {"sent": 2, "unknown": 1}
        assert "unknown: reader000@example.org: after the message was sent" in result.output
        # The server does take it in the end: that is why "unknown" is never resent by default.
        deadline = time.monotonic() + 10
        while not server.handler.count()["reader000@example.org"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.handler.count()["reader000@example.org"] == 1


def test_starttls_with_a_private_ca(tmp_path: Path) -> None:
    ca_file, context = make_test_ca(tmp_path)
    with SmtpServer(tls_context=context, require_starttls=True) as server:
        cfg = make_config(tmp_path, server.port, n=3, smtp=f"  ca_file: {ca_file}").read_text()
        path = tmp_path / "subs.yaml"
        path.write_text(cfg.replace("security: none", "security: starttls"))
        result = send(path)
        assert result.exit_code == 0, result.output
        assert len(server.received) == 3


def test_starttls_required_but_not_offered_stops_without_sending(tmp_path: Path) -> None:
    with SmtpServer() as server:  # no TLS at all
        cfg = make_config(tmp_path, server.port, n=3).read_text()
        path = tmp_path / "subs.yaml"
        path.write_text(cfg.replace("security: none", "security: starttls"))
        result = send(path)
    assert result.exit_code == 1
    assert "STARTTLS is required" in result.output
    assert server.received == []
    assert ledger(tmp_path) == {"pending": 3}


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_auth_with_the_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Plain AUTH without TLS is fine on loopback in a test (aiosmtpd warns about it otherwise).
    auth = dict(
        authenticator=password_authenticator("mailer", "s3cret"),
        auth_required=True,
        auth_require_tls=False,
    )
    with SmtpServer(**auth) as server:
        cfg = make_config(
            tmp_path,
            server.port,
            n=2,
            smtp="  username: mailer\n  password_env: TEST_SMTP_PASSWORD",
        )
        missing = send(cfg)
        assert missing.exit_code == 2
        assert "smtp.password_env: $TEST_SMTP_PASSWORD is not set" in missing.output
        monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong")
        refused = send(cfg)
        assert refused.exit_code == 1
        assert "SMTP AUTH as 'mailer' refused: 535" in refused.output
        assert server.received == []
        monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret")
        ok = send(cfg)
        assert ok.exit_code == 0, ok.output
        assert len(server.received) == 2


def test_a_second_process_gets_a_clear_line(tmp_path: Path) -> None:
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port, n=2)
        with SqliteStore(tmp_path / "state.db") as store, store.send_lock():
            result = send(cfg)
        assert result.exit_code == 1
        assert "is sending from this state file; try again when it is done" in result.output
        assert server.received == []


def test_weekly_subscribers_only_on_their_day(tmp_path: Path) -> None:
    with SmtpServer() as server:
        # 2026-05-08 is a Friday; weekly_on defaults to Monday.
        cfg = make_config(tmp_path, server.port, n=4, weekly=2)
        assert send(cfg).exit_code == 0
        assert sorted(server.handler.count()) == addresses(4)[2:]
        path = tmp_path / "subs.yaml"
        path.write_text(
            path.read_text().replace(
                "topics:\n  every", "schedule:\n  weekly_on: friday\ntopics:\n  every"
            )
        )
        assert send(path).exit_code == 0  # the day's run gains the weekly subscribers
        assert sorted(server.handler.count()) == addresses(4)


def test_dry_run_writes_the_due_digests_and_records_nothing(tmp_path: Path, store_url: str) -> None:
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port, n=3, weekly=1, state=store_url)
        out = tmp_path / "out"
        result = send(cfg, "--dry-run", "--out", str(out))
        assert result.exit_code == 0, result.output
        assert len(list(out.glob("*.eml"))) == 2
        assert server.received == []
    assert not (tmp_path / "state.db").exists()  # records nothing, creates nothing


def test_test_send_goes_elsewhere_and_records_nothing(tmp_path: Path, store_url: str) -> None:
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port, n=3, state=store_url)
        result = send(
            cfg, "--subscriber", "reader001@example.org", "--test", "operator@example.org"
        )
        assert result.exit_code == 0, result.output
        assert [m.rcpt_tos for m in server.received] == [["operator@example.org"]]
        assert not (tmp_path / "state.db").exists()  # records nothing, creates nothing
        # The real send afterwards still sends reader001 their digest.
        assert send(cfg).exit_code == 0
        assert sorted(server.handler.count()) == sorted([*addresses(3), "operator@example.org"])


def test_missing_signing_key_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEWSLETTER_SECRET")
    cfg = make_config(tmp_path, 25, n=1)
    result = send(cfg)
    assert result.exit_code == 2
    assert "newsletter.secret_env: $NEWSLETTER_SECRET is not set" in result.output


def test_daily_cap_leaves_the_rest_pending(tmp_path: Path, store_url: str) -> None:
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port, n=5, smtp="  daily_cap: 3", state=store_url)
        result = send(cfg)
        assert result.exit_code == 0, result.output
        assert len(server.received) == 3
        assert "2 left pending" in result.output
        assert ledger(tmp_path) == {"sent": 3, "pending": 2}


def test_421_reconnects_and_delivers(tmp_path: Path) -> None:
    closing = {"reader000@example.org", "reader002@example.org"}
    with SmtpServer(Faults(closing=closing)) as server:
        cfg = make_config(tmp_path, server.port, n=4, smtp="  connections: 1")
        result = send(cfg)
        assert result.exit_code == 0, result.output
    counts = server.handler.count()
    assert sorted(counts) == addresses(4) and set(counts.values()) == {1}
    assert all(server.handler.attempts[a] == 2 for a in closing)


def test_each_process_says_what_it_did_and_where_the_day_stands(
    tmp_path: Path, store_url: str
) -> None:
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port, n=5, smtp="  daily_cap: 3", state=store_url)
        first = send(cfg)
        assert first.exit_code == 0, first.output
        assert "this process: 3 sent\n" in first.output
        assert "  sent               3\n" in first.output
        # Another process resumes the same day's run: it says what it did itself.
        cfg.write_text(cfg.read_text().replace("  daily_cap: 3\n", ""))
        second = send(cfg)
        assert second.exit_code == 0, second.output
        assert "this process: 2 sent\n" in second.output
        assert "the day's run (2026-05-08, every process so far):\n  sent               5\n" in (
            second.output
        )
        third = send(cfg)
        assert "this process: nothing sent\n" in third.output and len(server.received) == 5


def test_an_operator_unsubscribes_by_hand_and_status_counts_who_is_mailed(
    tmp_path: Path,
    store_url: str,
) -> None:
    def cli_(*args: str) -> Result:
        return CliRunner().invoke(cli, [*args, "-c", str(cfg)])

    with SmtpServer(Faults(reject={"reader003@example.org"})) as server:
        cfg = make_config(tmp_path, server.port, n=5, state=store_url)
        done = cli_("subscribers", "unsubscribe", "Reader004@example.org")
        assert done.exit_code == 0, done.output
        assert done.output.startswith("Reader004@example.org: unsubscribed;")
        assert send(cfg).exit_code == 1  # reader003 bounces (550)
        later = CliRunner().invoke(
            cli, ["send", "-c", str(cfg), "--from", str(SAVED), "--date", "2026-05-09"]
        )
        assert "  unsubscribed       1\n  bounced            1\n" in later.output, later.output
        assert server.handler.count()["reader004@example.org"] == 0

        status = cli_("status")
        assert status.exit_code == 0, status.output
        assert "(3 subscribers)" in status.output and "(5 subscribers)" not in status.output
        assert "subscribers: 3 active, 1 unsubscribed, 1 bounced" in status.output

        again = cli_("subscribers", "unsubscribe", "reader004@example.org")
        assert again.output == "reader004@example.org: was already unsubscribed (by the operator)\n"
        bounced = cli_("subscribers", "unsubscribe", "reader003@example.org")
        assert bounced.output.startswith("reader003@example.org: unsubscribed (it was bounced")
        assert cli_("subscribers", "resubscribe", "reader004@example.org").exit_code == 0
    with open_store(store_url) as store:
        assert held(store) == {
            "reader003@example.org": ("unsubscribed", "by the operator"),
        }


@pytest.mark.parametrize("command", ["send", "run", "serve"])
def test_a_weak_signing_key_is_refused(tmp_path: Path, command: str) -> None:
    offline = "sources:\n  huggingface:\n    base_url: http://127.0.0.1:9\n    retries: 0\n"
    cfg = make_config(tmp_path, 25, n=1, extra=offline)
    env = {**os.environ, "NEWSLETTER_SECRET": "a"}
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", command, "-c", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a serve that starts instead of refusing would hang here
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"{cfg}: newsletter.secret_env: $NEWSLETTER_SECRET is too short (1 byte; at least 32): "
        "anyone could recover it from one link; make one with "
        "python -c 'import secrets; print(secrets.token_urlsafe(32))'\n"
    )
    assert not (tmp_path / "state.db").exists()


def test_tokens_never_reach_the_log_of_a_send_at_vv(tmp_path: Path) -> None:
    faults = Faults(reject={"reader001@example.org"}, drop_data={"reader002@example.org"})
    with SmtpServer(faults) as server:
        cfg = make_config(tmp_path, server.port, n=4)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "newsletter",
                "-vv",
                "send",
                "-c",
                str(cfg),
                "--from",
                str(SAVED),
                "--date",
                DAY,
            ],
            env={**os.environ, "NEWSLETTER_SECRET": "k" * 32},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1, result.stderr  # reader001 failed
    log = result.stdout + result.stderr
    assert "DEBUG " in log and "digest.sent" in log and "digest.unknown" in log
    with SqliteStore(cfg.parent / "state.db", read_only=True) as store:
        ids = [store.subscriber_by_email(a).id for a in addresses(4)]  # type: ignore[union-attr]
    made = [tokens.make_token(b"k" * 32, p, i) for i in ids for p in ("unsubscribe", "manage")]
    # The links that went out (four connections: any message may arrive first).
    assert any(made[0] in m.data.decode() for m in server.received)
    for token in made:
        assert token not in log
    assert "/unsubscribe/" not in log
