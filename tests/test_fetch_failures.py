"""A bad paper, a bad day, a huge or endless answer: the newsletter still goes out.

`newsletter send` against a real HTTP server on 127.0.0.1 (the saved captures, one item
mutated here), a real SMTP server (aiosmtpd) and a real SQLite file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from newsletter.cli import cli
from tests.conftest import HF_API_BY_DATE, fixture_path
from tests.httpserver import FixtureServer, Reply, Request
from tests.smtpserver import SmtpServer

BAD_DAY = dt.date(2026, 5, 8)  # the 37-paper capture; its first paper is 2605.05242
READERS = ["ada@example.org", "bob@example.org", "cy@example.org"]


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", "a-test-signing-key-of-at-least-32-bytes")


def capture(day: dt.date) -> list[Any]:
    data = json.loads(fixture_path(HF_API_BY_DATE[day.isoformat()]).read_bytes())
    assert isinstance(data, list)
    return data


def later_list(day: dt.date, n: int = 4) -> list[dict[str, Any]]:
    """A small, well-formed daily list for a day after the bad one (fresh ids every day)."""
    return [
        {
            "paper": {
                "id": f"2605.{9000 + (day - BAD_DAY).days * 10 + i:05d}",
                "title": f"We study the retrieval of papers, part {i}",
                "summary": "We show the method.",
                "upvotes": 10 + i,
                "authors": [{"name": "A. Author"}],
            },
            "numComments": 0,
        }
        for i in range(n)
    ]


class Lists:
    """What the Hugging Face API answers per date: a JSON list, or raw bytes (a broken day)."""

    def __init__(self) -> None:
        self.by_day: dict[dt.date, list[Any] | bytes] = {}

    def __call__(self, req: Request) -> Reply:
        body = self.by_day.get(dt.date.fromisoformat(req.query.get("date", "1970-01-01")), [])
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return Reply(200, raw, {"Content-Type": "application/json"})


@pytest.fixture
def hf() -> Iterator[tuple[FixtureServer, Lists]]:
    lists = Lists()
    with FixtureServer() as server:
        server.routes["/api/daily_papers"] = lists
        yield server, lists


def make_config(tmp_path: Path, hf_url: str, smtp_port: int, sources: str = "") -> Path:
    subs = "".join(f"  - email: {a}\n    topics: [everything]\n" for a in READERS)
    path = tmp_path / "subs.yaml"
    path.write_text(
        f"""\
newsletter:
  from: "Test Papers <papers@example.org>"
  state: state.db
sources:
  huggingface:
    base_url: {hf_url}
    retries: 0
{sources}smtp:
  host: 127.0.0.1
  port: {smtp_port}
  security: none
  retry_backoff: 0
  timeout: 5
topics:
  everything:
    keywords: [the, we]
subscribers:
{subs}""",
        encoding="utf-8",
    )
    return path


def send(cfg: Path, day: dt.date) -> Result:
    return CliRunner().invoke(cli, ["send", "-c", str(cfg), "--date", day.isoformat()])


def stored_ids(tmp_path: Path, day: dt.date) -> set[str]:
    db = sqlite3.connect(tmp_path / "state.db")
    query = "SELECT paper_id FROM paper_days WHERE day = ?"
    rows = db.execute(query, (day.isoformat(),)).fetchall()
    return {r[0] for r in rows}


def test_one_malformed_paper_is_skipped_and_every_day_goes_out(
    tmp_path: Path, hf: tuple[FixtureServer, Lists], caplog: pytest.LogCaptureFixture
) -> None:
    server, lists = hf
    bad = capture(BAD_DAY)
    bad[0]["paper"]["githubStars"] = "1.2k"
    lists.by_day[BAD_DAY] = bad
    following = [BAD_DAY + dt.timedelta(days=i) for i in range(1, 4)]
    for day in following:
        lists.by_day[day] = later_list(day)
    caplog.set_level(logging.WARNING, logger="newsletter")
    with SmtpServer() as smtp:
        cfg = make_config(tmp_path, server.url, smtp.port)

        result = send(cfg, BAD_DAY)
        assert result.exit_code == 0, result.output
        assert len(smtp.received) == len(READERS)
        # The other 36 papers of the day are stored; the bad one is not.
        ids = stored_ids(tmp_path, BAD_DAY)
        assert len(ids) == 36 and "2605.05242" not in ids
        [warning] = [r.getMessage() for r in caplog.records if "2605.05242" in r.getMessage()]
        assert "2026-05-08" in warning and "githubStars" in warning

        for day in following:
            before = len(smtp.received)
            result = send(cfg, day)
            assert result.exit_code == 0, (day, result.output)
            assert len(smtp.received) - before == len(READERS), day


def test_a_day_that_fails_as_a_whole_does_not_stop_the_next_days(
    tmp_path: Path, hf: tuple[FixtureServer, Lists]
) -> None:
    server, lists = hf
    lists.by_day[BAD_DAY] = b"<html>oops</html>"  # not JSON, and the page is a 404 too
    following = [BAD_DAY + dt.timedelta(days=i) for i in range(1, 4)]
    for day in following:
        lists.by_day[day] = later_list(day)
    with SmtpServer() as smtp:
        cfg = make_config(tmp_path, server.url, smtp.port)
        # The run's own day could not be read from any source: nothing goes out, exit 1.
        result = send(cfg, BAD_DAY)
        assert result.exit_code == 1
        assert "2026-05-08" in result.stderr
        assert smtp.received == []

        for day in following:
            before = len(smtp.received)
            result = send(cfg, day)
            # The broken day is tried again (and named in a warning); the rest goes out.
            assert result.exit_code == 0, (day, result.output)
            assert "warning: huggingface: 2026-05-08 not fetched" in result.stderr
            assert len(smtp.received) - before == len(READERS), day


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command in its own process: its stderr is what an operator reads."""
    # The timeout is a hang guard: without a deadline this run would take about ten minutes.
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_trickling_source_fails_at_the_fetch_deadline_and_is_asked_no_more(
    tmp_path: Path, hf: tuple[FixtureServer, Lists]
) -> None:
    server, _ = hf
    # 100 bytes a second, for every day: no single read ever times out.
    server.routes["/api/daily_papers"] = lambda req: Reply(
        200, chunks=(b"[        " for _ in range(6000)), chunk_delay=0.1
    )
    with SmtpServer() as smtp:
        cfg = make_config(tmp_path, server.url, smtp.port, "  fetch_deadline_seconds: 2\n")
        done = run_cli("send", "-c", str(cfg), "--date", BAD_DAY.isoformat())
        assert smtp.received == []
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("huggingface: failed:")]
    assert "the fetch deadline of 2 s (sources.fetch_deadline_seconds) passed" in line
    assert "(6 more days not tried in this run)" in line
    assert len(server.requests) == 1  # one day asked, no page fallback, no other day


def test_an_answer_over_the_size_cap_fails_its_fetch_unread(
    tmp_path: Path, hf: tuple[FixtureServer, Lists]
) -> None:
    server, lists = hf
    lists.by_day[BAD_DAY] = capture(BAD_DAY)  # 213 KB
    cap = "    max_response_bytes: 100000\n"
    with SmtpServer() as smtp:
        cfg = make_config(tmp_path, server.url, smtp.port)
        cfg.write_text(cfg.read_text().replace("    retries: 0\n", "    retries: 0\n" + cap))
        done = run_cli("send", "-c", str(cfg), "--date", BAD_DAY.isoformat())
        assert smtp.received == []
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("huggingface")]
    assert "larger than 100,000 bytes (sources.huggingface.max_response_bytes)" in line
    db = sqlite3.connect(tmp_path / "state.db")
    [(largest,)] = db.execute("SELECT MAX(LENGTH(body)) FROM responses").fetchall()
    assert largest < 100_000  # the big answer was not kept either
