"""What the operator sees of bounces and complaints: ``subscribers list`` (counts and status),
``resubscribe`` (clears a suppression and the counts), ``status`` (the last 30 days' rates,
with a warning above 2% bounces or 0.1% complaints)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from tests import inbound_mail as mail
from tests.smtpserver import SmtpServer
from tests.test_send import make_config, send

KEY = "operator-test-key-of-at-least-32-bytes!"


def invoke(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def listed(cfg: Path) -> dict[str, list[str]]:
    code, out, err = invoke("subscribers", "list", "-c", str(cfg))
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["email", "status", "source", "bounces", "complaints"], header
    return {row.split()[0]: [row.split()[1], *row.split()[3:5]] for row in rows}


def test_counts_status_rates_and_a_resubscribe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", KEY)
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port, n=10)
        assert send(cfg).exit_code == 0
    assert len(server.received) == 10
    # Bounced to the From address and a feedback loop's report: no token, the report names them.
    gone = mail.dsn("papers@example.org", "reader001@example.org")
    full = mail.dsn("papers@example.org", "reader002@example.org", "5.2.2", "smtp; 552 5.2.2 full")
    original = mail.plain("reader003@example.org", "Papers", "papers@example.org")
    complaint = mail.arf("fbl@example.org", original)
    for raw in (gone, full, complaint):
        code, out, err = invoke("inbound", "-c", str(cfg), stdin=raw)
        assert code == 0, err

    rows = listed(cfg)
    assert rows["reader001@example.org"] == ["bounced", "1", "0"]
    assert rows["reader002@example.org"] == ["active", "1", "0"]  # counted, not suppressed
    assert rows["reader003@example.org"] == ["complained", "0", "1"]
    assert rows["reader000@example.org"] == ["active", "0", "0"]

    code, out, err = invoke("status", "-c", str(cfg))
    assert code == 0, err
    assert "last 30 days: 10 sent, 2 bounced (20.00%), 1 spam complaint (10.00%)" in out, out
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, err
    assert "bounce rate is 20.00% (above 2%)" in warnings[0]
    assert "spam complaint rate is 10.00% (above 0.1%)" in warnings[1]

    code, out, err = invoke("subscribers", "resubscribe", "-c", str(cfg), "reader001@example.org")
    assert code == 0, err
    assert listed(cfg)["reader001@example.org"] == ["active", "0", "0"]  # the counts start again
    code, out, _ = invoke("status", "-c", str(cfg))
    assert "2 bounced (20.00%)" in out  # the rates keep what happened


def test_no_warning_under_the_thresholds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", KEY)
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port, n=3)
        assert send(cfg).exit_code == 0
    code, out, err = invoke("status", "-c", str(cfg))
    assert code == 0, err
    assert "last 30 days: 3 sent, 0 bounced (0.00%), 0 spam complaints (0.00%)" in out
    assert "rate is" not in err
