"""`newsletter serve` as a real process: schedule, unsubscribe endpoint, SIGHUP, SIGTERM."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import fixture_path
from tests.httpserver import FixtureServer, Reply, Request
from tests.smtpserver import SmtpServer, free_port

CAPTURE = fixture_path("hf_api_daily_papers_date_2026-05-08_37papers.json").read_bytes()


def today_only(req: Request) -> Reply:
    """Today's list is the 37-paper capture; every other day is empty."""
    today = dt.datetime.now(dt.UTC).date().isoformat()
    body = CAPTURE if req.query.get("date") == today and req.query.get("p", "0") == "0" else b"[]"
    return Reply(200, body, {"Content-Type": "application/json"})


@pytest.fixture
def hf() -> Iterator[FixtureServer]:
    with FixtureServer() as server:
        server.routes["/api/daily_papers"] = today_only
        yield server


def at(seconds: float) -> str:
    """A UTC send time ``seconds`` from now."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).strftime("%H:%M:%S")


def write_config(
    path: Path,
    hf: FixtureServer,
    smtp_port: int,
    web_port: int,
    subscribers: list[tuple[str, str]],
    extra: str = "",
) -> Path:
    subs = "".join(
        f'  - email: {address}\n    topics: [everything]\n    max_papers: 2\n    send_at: "{send_at}"\n'
        for address, send_at in subscribers
    )
    path.write_text(
        f"""\
newsletter:
  from: "Test Papers <papers@example.org>"
  base_url: http://127.0.0.1:{web_port}
  state: state.db
sources:
  huggingface:
    base_url: {hf.url}
    retries: 0
smtp:
  host: 127.0.0.1
  port: {smtp_port}
  security: none
  retry_backoff: 0
  timeout: 5
{extra}
server:
  host: 127.0.0.1
  port: {web_port}
topics:
  everything:
    keywords: [the, we]
subscribers:
{subs}""",
        encoding="utf-8",
    )
    return path


ENV = {**os.environ, "NEWSLETTER_SECRET": "serve-test-key-of-at-least-32-bytes"}


class Daemon:
    """`newsletter serve` in a subprocess, its stderr collected line by line."""

    def __init__(self, cfg: Path, *options: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "newsletter", *options, "serve", "-c", str(cfg)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_for(lambda: any(line.startswith("serving:") for line in self.lines), 20, self.log)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.reader.join(timeout=5)
        return code


def wait_for(
    condition: Callable[[], bool], seconds: float, explain: Callable[[], str] = lambda: ""
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s\n{explain()}")
        time.sleep(0.05)


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args, "-c", str(cfg)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )


def post(url: str, body: bytes = b"List-Unsubscribe=One-Click") -> tuple[int, str]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_scheduled_send_and_the_one_click_unsubscribe_round_trip(
    tmp_path: Path, hf: FixtureServer
) -> None:
    web_port = free_port()
    with SmtpServer() as smtp:
        cfg = write_config(
            tmp_path / "c.yaml",
            hf,
            smtp.port,
            web_port,
            [("ada@example.org", at(4)), ("bob@example.org", at(4))],
        )
        daemon = Daemon(cfg)
        try:
            assert get(f"http://127.0.0.1:{web_port}/healthz") == (200, "ok\n")
            wait_for(lambda: len(smtp.received) == 2, 30, daemon.log)
            ada = next(m for m in smtp.received if m.rcpt_tos == ["ada@example.org"])
            msg = email.message_from_bytes(ada.data, policy=email.policy.default)
            url = re.search(r"<(http://[^>]+)>", str(msg["List-Unsubscribe"])).group(1)  # type: ignore[union-attr]
            assert url.startswith(f"http://127.0.0.1:{web_port}/unsubscribe/")

            status, page = get(url)  # a GET only asks
            assert status == 200 and 'method="post"' in page and "ada@example.org" in page
            forged = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
            assert post(forged)[0] == 400
            assert post(f"http://127.0.0.1:{web_port}/unsubscribe/not-a-token")[0] == 400
            assert post(url)[0] == 200
            assert post(url)[0] == 200  # idempotent

            listing = cli(cfg, "subscribers", "list").stdout
            assert re.search(r"ada@example.org\s+unsubscribed", listing), listing
            assert re.search(r"bob@example.org\s+active", listing), listing
        finally:
            assert daemon.stop() == 0, daemon.log()

        # The next send skips Ada; Bob gets his next papers.
        tomorrow = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()
        nxt = cli(cfg, "send", "--date", tomorrow)
        assert nxt.returncode == 0, nxt.stdout + nxt.stderr
        assert re.search(r"unsubscribed\s+1", nxt.stdout), nxt.stdout
        assert Counter(r for m in smtp.received for r in m.rcpt_tos) == {
            "ada@example.org": 1,
            "bob@example.org": 2,
        }

        again = cli(cfg, "subscribers", "resubscribe", "ADA@example.org")
        assert again.stdout == "ADA@example.org: active again\n"
        status = cli(cfg, "status")
        assert (
            status.returncode == 0 and "last runs:" in status.stdout and "serve" in status.stdout
        ), status.stdout


def test_sighup_reloads_added_and_removed_subscribers(tmp_path: Path, hf: FixtureServer) -> None:
    web_port = free_port()
    with SmtpServer() as smtp:
        path = tmp_path / "c.yaml"
        write_config(path, hf, smtp.port, web_port, [("old@example.org", at(12))])
        daemon = Daemon(path)
        try:
            good = path.read_text()
            path.write_text(good.replace("topics: [everything]", "topics: [nothing]"))  # broken
            daemon.proc.send_signal(signal.SIGHUP)
            wait_for(
                lambda: "keeping the configuration loaded before" in daemon.log(), 10, daemon.log
            )
            assert "unknown topic 'nothing'" in daemon.log()

            write_config(path, hf, smtp.port, web_port, [("new@example.org", at(5))])
            daemon.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "reload.done" in daemon.log(), 10, daemon.log)
            wait_for(lambda: len(smtp.received) == 1, 30, daemon.log)
            time.sleep(10)  # past the removed subscriber's send time
        finally:
            assert daemon.stop() == 0, daemon.log()
    assert [m.rcpt_tos for m in smtp.received] == [["new@example.org"]]


def test_sigterm_during_a_send_leaves_a_resumable_ledger(tmp_path: Path, hf: FixtureServer) -> None:
    web_port = free_port()
    with SmtpServer() as smtp:
        people = [(f"r{i:03d}@example.org", "08:00") for i in range(120)]
        cfg = write_config(
            tmp_path / "c.yaml", hf, smtp.port, web_port, people, extra="  rate_per_second: 20"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "send", "-c", str(cfg)],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for(lambda: len(smtp.received) >= 10, 30)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "left pending: run send again to resume" in out
        db = sqlite3.connect(tmp_path / "state.db")
        statuses = dict(
            db.execute("SELECT status, COUNT(*) FROM ledger GROUP BY status").fetchall()
        )
        assert "sending" not in statuses and statuses.get("unknown", 0) == 0, statuses
        assert (
            statuses["sent"] == len(smtp.received) and statuses["pending"] == 120 - statuses["sent"]
        )
        db.close()
        resumed = cli(cfg, "send")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    counts = Counter(r for m in smtp.received for r in m.rcpt_tos)
    assert len(counts) == 120 and set(counts.values()) == {1}


def test_serve_and_run_at_once_never_send_twice(tmp_path: Path, hf: FixtureServer) -> None:
    web_port = free_port()
    with SmtpServer() as smtp:
        people = [(f"r{i:02d}@example.org", at(3)) for i in range(40)]
        cfg = write_config(
            tmp_path / "c.yaml", hf, smtp.port, web_port, people, extra="  rate_per_second: 40"
        )
        daemon = Daemon(cfg)
        try:
            time.sleep(3)
            runs = [cli(cfg, "run", "--wait", "60") for _ in range(3)]  # while serve sends
            wait_for(lambda: len(smtp.received) >= 40, 60, daemon.log)
            time.sleep(1)
        finally:
            assert daemon.stop() == 0, daemon.log()
    for r in runs:
        assert r.returncode == 0, r.stdout + r.stderr
    counts = Counter(rc for m in smtp.received for rc in m.rcpt_tos)
    assert len(counts) == 40 and set(counts.values()) == {1}, counts


def test_tokens_never_reach_the_log_even_at_vv(tmp_path: Path, hf: FixtureServer) -> None:
    web_port = free_port()
    with SmtpServer() as smtp:
        cfg = write_config(
            tmp_path / "c.yaml", hf, smtp.port, web_port, [("ada@example.org", at(4))]
        )
        daemon = Daemon(cfg, "-vv")
        try:
            wait_for(lambda: len(smtp.received) == 1, 30, daemon.log)
            msg = email.message_from_bytes(smtp.received[0].data, policy=email.policy.default)
            url = re.search(r"<(http://[^>]+)>", str(msg["List-Unsubscribe"])).group(1)  # type: ignore[union-attr]
            assert get(url)[0] == 200
            assert post(url + "x")[0] == 400  # a forged one is logged too
            assert post(url)[0] == 200
            wait_for(lambda: "unsubscribe.done" in daemon.log(), 10, daemon.log)
        finally:
            assert daemon.stop() == 0, daemon.log()
    log = daemon.log()
    token = url.rsplit("/", 1)[1]
    assert (
        "DEBUG newsletter.web.server http " in log
    )  # the requests are logged, without their token
    for part in (token, *token.split(".")):
        assert part not in log
    assert not re.search(r"/unsubscribe/[A-Za-z0-9_.-]{8,}", log), log


def test_a_port_in_use_names_host_port_and_the_key(tmp_path: Path, hf: FixtureServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path / "c.yaml", hf, 25, port, [("ada@example.org", at(3600))])
        result = subprocess.run(
            [sys.executable, "-m", "newsletter", "serve", "-c", str(cfg)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"{cfg}: server.port: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another `newsletter serve`? set server.port to a free port)\n"
    )
