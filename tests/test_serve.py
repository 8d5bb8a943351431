"""`newsletter serve`: the schedule and the unsubscribe endpoint in simulated time (the daemon
in this process, on a fake clock), and as a real process: SIGHUP, SIGTERM, the port, -vv."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
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
from contextlib import contextmanager
from pathlib import Path

import pytest

from newsletter import config, schedule
from newsletter.models import SubscriberRecord
from newsletter.store import SqliteStore
from newsletter.web import tokens
from tests.clock import FakeClock
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


KEY = ENV["NEWSLETTER_SECRET"].encode()
MAY_8 = dt.datetime(2026, 5, 8, 7, 59, 30, tzinfo=dt.UTC)  # the day of conftest's 37-paper capture


@contextmanager
def daemon_in_process(cfg: Path, clock: FakeClock) -> Iterator[schedule.Daemon]:
    """What `newsletter serve` runs, in this process, on a simulated clock."""
    daemon = schedule.Daemon(cfg, config.load(cfg), KEY, clock=clock)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.close()


def test_scheduled_send_and_the_one_click_unsubscribe_round_trip(
    tmp_path: Path, hf_server: FixtureServer
) -> None:
    web_port = free_port()
    clock = FakeClock(MAY_8)
    with SmtpServer() as smtp:
        cfg = write_config(
            tmp_path / "c.yaml",
            hf_server,
            smtp.port,
            web_port,
            [("ada@example.org", "08:00"), ("bob@example.org", "08:00")],
        )
        with daemon_in_process(cfg, clock):
            assert get(f"http://127.0.0.1:{web_port}/healthz") == (200, "ok\n")
            clock.run_until(lambda: len(smtp.received) == 2, limit=3600)
            assert dt.time(8) <= clock().time() < dt.time(8, 1)
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

        # The next send skips Ada; Bob gets his next papers.
        nxt = cli(cfg, "send", "--date", "2026-05-09")
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


def test_a_reload_adds_and_removes_subscribers_and_keeps_the_config_when_broken(
    tmp_path: Path, hf_server: FixtureServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="newsletter")
    clock = FakeClock(MAY_8)
    with SmtpServer() as smtp:
        path = tmp_path / "c.yaml"
        web_port = free_port()
        write_config(path, hf_server, smtp.port, web_port, [("old@example.org", "08:00:10")])
        with daemon_in_process(path, clock) as daemon:
            good = path.read_text()
            path.write_text(good.replace("topics: [everything]", "topics: [nothing]"))  # broken
            daemon.reload()
            assert "keeping the configuration loaded before" in caplog.text
            assert "unknown topic 'nothing'" in caplog.text

            write_config(path, hf_server, smtp.port, web_port, [("new@example.org", "08:00:05")])
            daemon.reload()
            assert "reload.done subscribers=1 jobs=1" in caplog.text
            # Until well past the removed subscriber's send time.
            clock.run_until(lambda: clock() > MAY_8 + dt.timedelta(minutes=5), limit=3600)
    assert [m.rcpt_tos for m in smtp.received] == [["new@example.org"]]


def test_sighup_reloads_the_config_file_and_keeps_it_when_broken(
    tmp_path: Path, hf: FixtureServer
) -> None:
    """The signal's path in the real process (what a reload does: the test above)."""
    path = tmp_path / "c.yaml"
    web_port = free_port()
    write_config(path, hf, 25, web_port, [("old@example.org", "08:00")])
    daemon = Daemon(path)
    try:
        good = path.read_text()
        path.write_text(good.replace("topics: [everything]", "topics: [nothing]"))  # broken
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "keeping the configuration loaded before" in daemon.log(), 10, daemon.log)
        assert "unknown topic 'nothing'" in daemon.log()

        people = [("new@example.org", "09:00"), ("other@example.org", "10:00")]
        write_config(path, hf, 25, web_port, people)
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload.done subscribers=2 jobs=2" in daemon.log(), 10, daemon.log)
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert "schedule.removed job=daily-0800-UTC" in daemon.log()


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
        write_config(cfg, hf, smtp.port, web_port, people)  # the rest at full speed
        resumed = cli(cfg, "send")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    counts = Counter(r for m in smtp.received for r in m.rcpt_tos)
    assert len(counts) == 120 and set(counts.values()) == {1}


def test_serve_and_run_at_once_never_send_twice(tmp_path: Path, hf: FixtureServer) -> None:
    # Both on today (UTC), the day `run` reads off the real clock: the send time passed a
    # minute ago for `run`, and comes half a minute into the daemon's simulated time.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = max(now - dt.timedelta(seconds=90), now.replace(hour=0, minute=0, second=1))
    send_at = (start + dt.timedelta(seconds=30)).strftime("%H:%M:%S")
    with SmtpServer() as smtp:
        people = [(f"r{i:02d}@example.org", send_at) for i in range(40)]
        cfg = write_config(
            tmp_path / "c.yaml", hf, smtp.port, free_port(), people, extra="  rate_per_second: 10"
        )
        clock = FakeClock(start)
        with daemon_in_process(cfg, clock):
            clock.run_until(lambda: len(smtp.received) >= 1, limit=600)
            runs = [  # while serve sends
                subprocess.Popen(
                    [sys.executable, "-m", "newsletter", "run", "--wait", "60", "-c", str(cfg)],
                    env=ENV,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for _ in range(3)
            ]
            outputs = [r.communicate(timeout=120)[0] for r in runs]
            clock.run_until(lambda: len(smtp.received) >= 40, limit=600)
    for r, out in zip(runs, outputs, strict=True):
        assert r.returncode == 0, out
    counts = Counter(rc for m in smtp.received for rc in m.rcpt_tos)
    assert len(counts) == 40 and set(counts.values()) == {1}, counts


def test_tokens_never_reach_the_log_even_at_vv(tmp_path: Path, hf: FixtureServer) -> None:
    web_port = free_port()
    cfg = write_config(tmp_path / "c.yaml", hf, 25, web_port, [("ada@example.org", "08:00")])
    with SqliteStore(config.load(cfg).state_path) as store:  # Ada's row, as a first run makes it
        ada = SubscriberRecord("ada@example.org", ("t",), status="active", source="config")
        token = tokens.make_token(
            KEY, "unsubscribe", store.add_subscriber(ada, now=dt.datetime.now(dt.UTC)).id
        )
    url = f"http://127.0.0.1:{web_port}/unsubscribe/{token}"
    daemon = Daemon(cfg, "-vv")
    try:
        assert get(url)[0] == 200
        assert post(url + "x")[0] == 400  # a forged one is logged too
        assert post(url)[0] == 200
        wait_for(lambda: "unsubscribe.done" in daemon.log(), 10, daemon.log)
    finally:
        assert daemon.stop() == 0, daemon.log()
    log = daemon.log()
    assert (
        "DEBUG newsletter.web.server http " in log
    )  # the requests are logged, without their token
    assert token not in log
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


def test_no_token_of_any_page_reaches_the_log_even_at_vv(tmp_path: Path) -> None:
    """The confirm, manage and unsubscribe paths are logged with their token cut off, whatever
    the answer (a page, a 400, a 404 with signup off)."""
    from tests.signup_site import write_config as site_config

    web_port = free_port()
    cfg = site_config(tmp_path, 25, web_port)
    secret = tokens.make_token(KEY, "manage", "AbCdEfGhIjKlMnOp")
    daemon = Daemon(cfg, "-vv")
    try:
        for kind in ("confirm", "manage", "unsubscribe"):
            url = f"http://127.0.0.1:{web_port}/{kind}/{secret}"
            assert get(url)[0] == 400
            assert post(url + "?x=" + secret)[0] == 400
        wait_for(lambda: daemon.log().count("http POST /unsubscribe/<token>") >= 1, 10, daemon.log)
    finally:
        assert daemon.stop() == 0, daemon.log()
    log = daemon.log()
    assert "DEBUG newsletter.web.server http GET /manage/<token> 400" in log, log
    assert secret not in log and secret[:12] not in log, log
