"""The state file: read-only commands open it read-only, a missing folder is a config error,
a new file is announced, and a file that cannot be written (read-only, a full disk) is one
line naming it, never an internal error. A real SQLite file throughout."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from newsletter.cli import cli
from newsletter.models import SubscriberRecord
from newsletter.store import SqliteStore
from tests.conftest import fixture_path, write_config
from tests.httpserver import FixtureServer
from tests.smtpserver import SmtpServer

DAY = "2026-05-08"
SAVED = fixture_path("hf_api_daily_papers_date_2026-05-08_37papers.json")
NEW_STATE = "a new, empty state database (newsletter.state)"
SECRET = "test-signing-key-of-at-least-32-bytes"


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)


def config(
    tmp_path: Path, *, state: str = "state.db", smtp_port: int = 9, readers: int = 1
) -> Path:
    subscribers = "".join(
        f"  - email: reader{i}@example.org\n    topics: [everything]\n    max_papers: 2\n"
        for i in range(1, readers)
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        f"""\
newsletter:
  state: {state}
sources:
  huggingface:
    base_url: http://127.0.0.1:9
    retries: 0
smtp:
  host: 127.0.0.1
  port: {smtp_port}
  security: none
  retry_backoff: 0
topics:
  everything:
    keywords: [the, we]
subscribers:
  - email: ada@example.org
    topics: [everything]
    max_papers: 2
{subscribers}""",
        encoding="utf-8",
    )
    return path


def invoke(cfg: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "-c", str(cfg)])


def process(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args, "-c", str(cfg)],
        env={**os.environ, "NEWSLETTER_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=120,
    )


def fetched(cfg: Path) -> Path:
    """A state file with the day's papers in it, in rollback-journal mode (as a backup is)."""
    result = invoke(cfg, "fetch", "--from", str(SAVED), "--date", DAY)
    assert result.exit_code == 0, result.output
    state = cfg.parent / "state.db"
    sqlite3.connect(state).execute("PRAGMA journal_mode=DELETE").fetchone()
    return state


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` cannot be written, even by root (the immutable attribute), or skip."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a file read-only here (chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("command", [["status"], ["subscribers", "list"]])
def test_a_read_only_command_leaves_the_state_file_as_it_is(
    tmp_path: Path, command: list[str]
) -> None:
    state = fetched(config(tmp_path))
    before = state.read_bytes()
    result = invoke(tmp_path / "c.yaml", *command)
    assert result.exit_code == 0, result.output
    assert state.read_bytes() == before  # not switched to WAL, nothing written
    assert sorted(p.name for p in tmp_path.glob("state.db*")) == [
        "state.db",
        "state.db.migrate.lock",
    ]


@pytest.mark.parametrize("command", [["status"], ["subscribers", "list"]])
def test_a_read_only_command_reads_a_read_only_state_file(
    tmp_path: Path, command: list[str]
) -> None:
    cfg = config(tmp_path)
    state = fetched(cfg)
    with SqliteStore(state) as store:
        store.add_subscriber(
            SubscriberRecord("ada@example.org", ("t",), status="unsubscribed", source="config"),
            now=dt.datetime.now(dt.UTC),
        )
    sqlite3.connect(state).execute("PRAGMA journal_mode=DELETE").fetchone()
    with read_only(state):
        result = invoke(cfg, *command)
    assert result.exit_code == 0, result.output
    assert "unsubscribed" in result.output


@pytest.mark.parametrize("command", [["status"], ["subscribers", "list"]])
def test_a_read_only_command_creates_no_state_file(tmp_path: Path, command: list[str]) -> None:
    result = invoke(config(tmp_path), *command)
    assert result.exit_code == 0, result.output
    assert "active" in result.output
    assert list(tmp_path.glob("state.db*")) == []


@pytest.mark.parametrize(
    "command",
    [["check"], ["status"], ["subscribers", "list"], ["send"], ["run"], ["fetch"], ["serve"]],
)
def test_a_state_folder_that_does_not_exist_is_refused(tmp_path: Path, command: list[str]) -> None:
    cfg = config(tmp_path, state="missing/state.db")
    result = process(cfg, *command)  # bounded: a serve that did not refuse would run on
    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        f"{cfg}:2: newsletter.state: {tmp_path / 'missing' / 'state.db'}: "
        f"its folder {tmp_path / 'missing'} does not exist\n",
    )
    assert not (tmp_path / "missing").exists()


def test_send_says_when_it_creates_the_state_file(tmp_path: Path) -> None:
    with SmtpServer() as server:
        cfg = config(tmp_path, smtp_port=server.port)
        first = invoke(cfg, "send", "--from", str(SAVED), "--date", DAY)
        assert first.exit_code == 0, first.output
        assert f"newsletter: {tmp_path / 'state.db'}: {NEW_STATE}\n" in first.output
        again = invoke(cfg, "send", "--from", str(SAVED), "--date", DAY)
        assert again.exit_code == 0, again.output
        assert NEW_STATE not in again.output
    assert len(server.received) == 1


def test_run_says_when_it_creates_the_state_file(tmp_path: Path, hf_server: FixtureServer) -> None:
    due = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).strftime("%H:%M")
    subscriber = f'  - email: ada@example.org\n    topics: [retrieval]\n    send_at: "{due}"\n'
    cfg = write_config(tmp_path / "c.yaml", hf_url=hf_server.url, subscribers=subscriber)
    result = invoke(cfg, "run")
    assert f"newsletter: {tmp_path / 'state.db'}: {NEW_STATE}\n" in result.output, result.output
    assert (tmp_path / "state.db").is_file()


def test_serve_says_when_it_creates_the_state_file(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with cfg.open("a") as f:
        f.write("server:\n  host: 127.0.0.1\n  port: 0\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "-c", str(cfg)],
        env={**os.environ, "NEWSLETTER_SECRET": SECRET},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, proc.kill)  # a hang guard: stderr ends when it dies
    watchdog.start()
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("serving:"):
                break
        assert f"newsletter: {tmp_path / 'state.db'}: {NEW_STATE}\n" in lines, lines
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


@pytest.mark.parametrize(
    "command",
    [["fetch", "--from", str(SAVED), "--date", DAY], ["send", "--from", str(SAVED), "--date", DAY]],
)
def test_a_read_only_state_file_is_one_line_for_a_command_that_writes(
    tmp_path: Path, command: list[str]
) -> None:
    cfg = config(tmp_path)
    state = fetched(cfg)
    sqlite3.connect(state).execute("PRAGMA journal_mode=WAL").fetchone()  # opens without a write
    with read_only(state):
        result = invoke(cfg, *command)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"newsletter: {state}: attempt to write a readonly database "
        "(can this user write the file and its folder?)"
    )


def fill(disk: Path) -> None:
    with (disk / "filler").open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()


@pytest.mark.parametrize("full", ["max_page_count", "tmpfs"])
def test_a_full_disk_while_freezing_the_run_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full: str
) -> None:
    """SQLite's real "database or disk is full" at the ledger's first write: the file may
    not grow (runs everywhere), or a real small file system fills up (where one mounts)."""
    disk = tmp_path
    if full == "tmpfs":
        disk = tmp_path / "disk"
        disk.mkdir()
        mount = ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)]
        if subprocess.run(mount, capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
    freeze = SqliteStore.freeze

    def full_freeze(store: SqliteStore, *args: object, **kwargs: object) -> int:
        if full == "tmpfs":
            fill(disk)
        else:
            pages = store.db.execute("PRAGMA page_count").fetchone()[0]
            store.db.execute(f"PRAGMA max_page_count = {pages}")  # no room to grow
        return freeze(store, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SqliteStore, "freeze", full_freeze)
    try:
        with SmtpServer() as server:
            cfg = config(disk, smtp_port=server.port, readers=200)  # rows for more than a page
            result = invoke(cfg, "send", "--from", str(SAVED), "--date", DAY)
            assert result.exit_code == 1
            assert result.output.splitlines()[-1] == (
                f"newsletter: {disk / 'state.db'}: database or disk is full "
                "(free some space on its disk)"
            )
            assert server.received == []
            (disk / "filler").unlink(missing_ok=True)  # room again: the day goes out
            # A process, bounded: a write that fails mid-send must not hang the test.
            again = process(cfg, "send", "--from", str(SAVED), "--date", DAY)
            assert again.returncode == 0, again.stdout + again.stderr
        assert len(server.received) == 200
    finally:
        if full == "tmpfs":
            subprocess.run(["umount", "-l", str(disk)], check=False)
