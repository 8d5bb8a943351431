"""SmtpSender against servers that misbehave on purpose: a cut in the middle of the data,
an outage (refused, 421, silence, a failed TLS handshake), no AUTH, and the EHLO name."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.compose import pool
from newsletter.deliver import Outcome, SmtpSender, SmtpSettings
from newsletter.models import Email, Outgoing
from tests.smtpserver import BrokenServer, Faults, SmtpServer, free_port
from tests.test_crash import start
from tests.test_send import addresses, ledger, make_config, send
from tests.test_send import secret as secret  # autouse: NEWSLETTER_SECRET is set
from tests.test_serve import wait_for


def outgoing(recipient: str, size: int = 1000) -> Outgoing:
    line = b"x" * 76 + b"\r\n"
    body = b"Subject: test\r\n\r\n" + line * (size // len(line) + 1)
    email = Email(recipient, None, "test", "", "", ("2605.00001",))
    return Outgoing(recipient, "papers@example.org", f"<{recipient}>", body, email)


class Recorder:
    """Events that keep what happened, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, str]] = []

    def started(self, message: Outgoing) -> None:
        with self.lock:
            self.log.append(("started", message.recipient, ""))

    def retrying(self, message: Outgoing, detail: str) -> None:
        with self.lock:
            self.log.append(("retrying", message.recipient, detail))

    def finished(self, message: Outgoing, outcome: Outcome) -> None:
        with self.lock:
            self.log.append((outcome.status, message.recipient, outcome.detail))

    def outcomes(self) -> dict[str, str]:
        return {r: s for s, r, _ in self.log if s not in ("started", "retrying")}


def within(seconds: float, work: Callable[[], None]) -> None:
    """Run ``work`` in a thread; fail (instead of hanging the suite) if it does not return."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: it hangs"
    if errors:
        raise errors[0]


# -- 3: a cut before the end of the data ---------------------------------------------------


def test_a_connection_cut_before_the_end_of_data_is_retried_not_unknown() -> None:
    cut = "reader001@example.org"
    with SmtpServer(Faults(cut_data={cut})) as server:
        settings = SmtpSettings(
            host="127.0.0.1", port=server.port, security="none", connections=1, retry_backoff=0
        )
        # Larger than what the socket buffers hold: the server stops reading in the middle
        # and closes while the client is still writing the data.
        messages = [outgoing(a, size=8_000_000 if a == cut else 1000) for a in addresses(3)]
        events = Recorder()
        within(120, lambda: SmtpSender(settings).send_all(messages, events))
    assert server.handler.cut == {cut}  # the fault did happen
    assert events.outcomes() == dict.fromkeys(addresses(3), "sent")
    # started (the end of data about to be written) only once: on the attempt that went through
    assert next(e for e in events.log if e[1] == cut) == ("started", cut, "")
    assert server.handler.count() == dict.fromkeys(addresses(3), 1)
    assert len(next(m for m in server.received if m.rcpt_tos == [cut]).data) > 8_000_000


def test_a_drop_after_the_end_of_data_stays_unknown() -> None:
    dropped = "reader001@example.org"  # the server has the whole message, then drops
    with SmtpServer(Faults(drop_data={dropped})) as server:
        settings = SmtpSettings(
            host="127.0.0.1", port=server.port, security="none", connections=1, retry_backoff=0
        )
        events = Recorder()
        within(60, lambda: SmtpSender(settings).send_all([outgoing(dropped)], events))
    assert events.outcomes() == {dropped: "unknown"}


# -- 2: an outage stops the run, everyone stays pending -----------------------------------


OUTAGES = ["refused", "421 on connect", "no greeting", "TLS handshake"]


def outage(kind: str) -> tuple[object, int, str, str]:
    """A server (a context manager) for ``kind``, its port, the smtp: lines, the error."""
    if kind == "refused":
        port = free_port()  # nothing listens there
        return contextlib.nullcontext(), port, "", "Connect call failed"
    if kind == "421 on connect":
        server = BrokenServer("421 4.3.2 Too many connections, try later")
        return server, server.port, "", "421 4.3.2 Too many connections, try later"
    if kind == "no greeting":
        server = BrokenServer(None)
        return server, server.port, "", "no answer within 0.5 s (smtp.connect_timeout)"
    # security: tls against a server that speaks plain SMTP
    smtp = SmtpServer()
    return smtp, smtp.port, "SECURITY_TLS", "SSL"


@pytest.mark.parametrize("kind", OUTAGES)
def test_an_outage_stops_the_run_with_one_line_and_everyone_pending(
    tmp_path: Path, kind: str
) -> None:
    server, port, flag, error = outage(kind)
    with server:  # type: ignore[attr-defined]
        text = make_config(
            tmp_path, port, n=20, smtp="  max_retries: 2\n  connect_timeout: 0.5"
        ).read_text()
        if flag == "SECURITY_TLS":
            text = text.replace("security: none", "security: tls")
        cfg = tmp_path / "subs.yaml"
        cfg.write_text(text)
        result = send(cfg)
    assert result.exit_code == 1, result.output
    stopped = [line for line in result.output.splitlines() if "stopped" in line]
    assert len(stopped) == 1, result.output
    assert stopped[0].startswith(
        f"newsletter: stopped: 127.0.0.1:{port}: cannot connect (3 attempts, smtp.max_retries: 2): "
    ), stopped
    assert error in stopped[0], stopped
    assert "20 left pending" in result.output
    assert ledger(tmp_path) == {"pending": 20}


def test_after_an_outage_the_same_send_delivers_everyone(tmp_path: Path) -> None:
    port = free_port()
    cfg = make_config(tmp_path, port, n=20, smtp="  max_retries: 1\n  connect_timeout: 0.5")
    down = send(cfg)
    assert down.exit_code == 1 and ledger(tmp_path) == {"pending": 20}, down.output
    with SmtpServer(port=port) as server:
        again = send(cfg)
    assert again.exit_code == 0, again.output
    assert server.handler.count() == dict.fromkeys(addresses(20), 1)
    assert ledger(tmp_path) == {"sent": 20}


def test_an_outage_costs_a_few_connection_attempts_not_a_few_per_recipient(
    tmp_path: Path,
) -> None:
    # The bound on the time an outage takes, as a count: each of the pool's connections
    # tries 1 + max_retries times, however many recipients wait.
    with BrokenServer("421 4.3.2 Service not available") as server:
        cfg = make_config(tmp_path, server.port, n=300, smtp="  max_retries: 2\n  connections: 4")
        result = send(cfg)
    assert result.exit_code == 1, result.output
    assert 1 <= server.connections <= 4 * 3, server.connections
    assert ledger(tmp_path) == {"pending": 300}


def test_an_outage_stops_a_send_large_enough_for_the_compose_pool(tmp_path: Path) -> None:
    # From POOL_THRESHOLD recipients on, digests are composed on a pool of processes, some
    # ahead of the sender: stopping early must end the pool, not hang at its shutdown.
    n = pool.POOL_THRESHOLD
    cfg = make_config(tmp_path, free_port(), n=n, smtp="  max_retries: 0")
    proc = start(cfg)
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 1, out
    assert "stopped: 127.0.0.1:" in out and "cannot connect" in out, out
    assert ledger(tmp_path) == {"pending": n}


def test_sigterm_while_waiting_for_a_server_that_never_answers(tmp_path: Path) -> None:
    with BrokenServer(None) as server:
        # Left alone this would wait 4 x 300 s before giving up.
        cfg = make_config(
            tmp_path, server.port, n=30, smtp="  max_retries: 3\n  connect_timeout: 300"
        )
        proc = start(cfg)
        wait_for(lambda: server.connections >= 1, 60)  # the pool is waiting for a greeting
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "30 left pending: run send again to resume" in out
    assert ledger(tmp_path) == {"pending": 30}


# -- 10: AUTH the server does not offer ----------------------------------------------------


def test_auth_not_offered_says_so_not_starttls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret")
    with SmtpServer() as server:  # no AUTH at all
        cfg = make_config(
            tmp_path,
            server.port,
            n=2,
            smtp="  username: mailer\n  password_env: TEST_SMTP_PASSWORD",
        )
        result = send(cfg)
    assert result.exit_code == 1
    assert (
        f"newsletter: stopped: 127.0.0.1:{server.port}: smtp.username is set ('mailer') but the "
        "server offers no AUTH on an unencrypted connection; check smtp.host, smtp.port and "
        "smtp.security"
    ) in result.output
    assert "STARTTLS" not in result.output
    assert ledger(tmp_path) == {"pending": 2}


# -- issue 13, 3: the EHLO name ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fqdn", "configured", "expected"),
    [
        ("localhost", None, "example.org"),  # no dot: the From address's domain
        ("localhost.localdomain", None, "example.org"),
        ("mail.example.net", None, "mail.example.net"),
        ("mail.example.net", "news.example.org", "news.example.org"),
    ],
)
def test_the_greeting_names_the_sender(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fqdn: str,
    configured: str | None,
    expected: str,
) -> None:
    monkeypatch.setattr(socket, "getfqdn", lambda name="": fqdn)
    with SmtpServer() as server:
        cfg = make_config(
            tmp_path, server.port, n=1, smtp=f"  helo_name: {configured}" if configured else ""
        )
        result = send(cfg)
    assert result.exit_code == 0, result.output
    assert [m.helo for m in server.received] == [expected]


def test_a_helo_name_with_a_line_break_is_refused(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, 25, n=1, smtp='  helo_name: "mail.example.org\\nRCPT TO:<x@y>"')
    result = CliRunner().invoke(cli, ["check", "-c", str(cfg)])
    assert result.exit_code == 2
    assert re.search(r"subs\.yaml:\d+: smtp\.helo_name: .*not a host name", result.output), (
        result.output
    )
