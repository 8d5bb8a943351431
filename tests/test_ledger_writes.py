"""A ledger write that fails (a full disk, an I/O error) stops the send at once, never hangs it,
and leaves a ledger the next send resumes: accepted but unrecorded -> unknown, the rest pending."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.deliver import Outcome, SmtpSender, SmtpSettings
from newsletter.models import Outgoing
from tests.conftest import require
from tests.smtpserver import SmtpServer
from tests.test_crash import start
from tests.test_send import DAY, SAVED, addresses, make_config
from tests.test_send_faults import Recorder, outgoing, within
from tests.test_serve import wait_for


class DiskFull(Exception):
    pass


class FailingEvents(Recorder):
    """Events whose ``n``-th write of kind ``where`` (started or finished) raises."""

    def __init__(self, where: str, n: int) -> None:
        super().__init__()
        self.where = where
        self.n = n
        self.calls = 0
        self.failed: str | None = None  # the recipient whose write raised

    def _write(self, kind: str, message: Outgoing) -> None:
        if kind != self.where:
            return
        with self.lock:
            self.calls += 1
            fail = self.calls == self.n
        if fail:
            self.failed = message.recipient
            raise DiskFull(f"database or disk is full ({kind} #{self.n})")

    def started(self, message: Outgoing) -> None:
        self._write("started", message)
        super().started(message)

    def finished(self, message: Outgoing, outcome: Outcome) -> None:
        self._write("finished", message)
        super().finished(message, outcome)


@pytest.mark.parametrize("connections", [1, 4])
@pytest.mark.parametrize("where", ["started", "finished"])
def test_an_events_write_that_raises_stops_the_send_and_raises(
    where: str, connections: int
) -> None:
    with SmtpServer() as server:
        settings = SmtpSettings(
            host="127.0.0.1", port=server.port, security="none", connections=connections
        )
        events = FailingEvents(where, 5)
        messages = [outgoing(a) for a in addresses(60)]

        def run() -> None:
            with pytest.raises(DiskFull, match="database or disk is full"):
                SmtpSender(settings).send_all(messages, events)

        within(60, run)  # on a full queue the producer used to wait forever
    started = [r for kind, r, _ in events.log if kind == "started"]
    received = [r for m in server.received for r in m.rcpt_tos]
    # Only what was started reached the server (a message whose ``started`` failed did not),
    # and nothing started after the failure but what was in flight on other connections.
    assert sorted(received) == sorted(started)
    assert len(started) <= 5 + connections
    assert events.failed is not None
    assert (events.failed in received) == (where == "finished")


# -- a real "database or disk is full" -----------------------------------------------------

# `newsletter` with the state file capped a page above its size once the run is frozen.
CAPPED = """
import sys
from newsletter import cli, store

freeze = store.SqliteStore.freeze

def capped(self, *args, **kwargs):
    added = freeze(self, *args, **kwargs)
    pages = self.db.execute("PRAGMA page_count").fetchone()[0]
    self.db.execute(f"PRAGMA max_page_count = {pages + 1}")
    return added

store.SqliteStore.freeze = capped
sys.argv[0] = "newsletter"
cli.main()
"""


def statuses(state: Path) -> Counter[str]:
    db = sqlite3.connect(state)
    try:
        return Counter(dict(db.execute("SELECT status, COUNT(*) FROM ledger GROUP BY status")))
    finally:
        db.close()


def assert_stopped_on_the_state_file(out: str, state: Path, code: int | None) -> None:
    assert code == 1, out
    # One line, nothing else (but the notice that the send created the state file).
    lines = [line for line in out.strip().splitlines() if "a new, empty state" not in line]
    assert len(lines) == 1, out
    last = lines[0]
    assert last.startswith(f"newsletter: {state}: cannot record "), out
    assert last.endswith(": database or disk is full (free some space on its disk)"), out


def assert_resumed_without_loss_or_duplicate(
    cfg: Path, state: Path, server: SmtpServer, n: int, in_flight: int
) -> None:
    again = start(cfg)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0, out
    after = statuses(state)
    # Accepted but unrecorded -> unknown (not sent again); everyone else delivered now.
    assert after == Counter({"sent": n - in_flight, "unknown": in_flight}), after
    assert server.handler.count() == dict.fromkeys(addresses(n), 1)


def test_sqlite_database_full_stops_the_send_with_one_line(tmp_path: Path) -> None:
    n = 80
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port, n=n)
        args = ["send", "-c", str(cfg), "--from", str(SAVED), "--date", DAY]
        proc = subprocess.Popen(
            [sys.executable, "-c", CAPPED, *args],
            env={**os.environ, "NEWSLETTER_SECRET": "test-signing-key-of-at-least-32-bytes"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            out, _ = proc.communicate(timeout=120)
        finally:
            proc.kill()
        state = tmp_path / "state.db"
        assert_stopped_on_the_state_file(out, state, proc.returncode)
        before = statuses(state)
        assert set(before) <= {"sent", "sending", "pending"} and before["pending"], before
        assert before["sending"] <= 4, before  # at most one in flight per connection
        assert len(server.received) == before["sent"] + before["sending"]
        assert_resumed_without_loss_or_duplicate(cfg, state, server, n, before["sending"])


# -- a real full file system ---------------------------------------------------------------


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 32 MB tmpfs of its own, so the test can fill it (needs root and mount(8)).

    Mounted outside pytest's temporary folders, which other pytest sessions tidy up.
    """
    require(shutil.which("mount") is not None, "mount(8) is not installed")
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = Path(tempfile.mkdtemp(prefix="newsletter-full-disk-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        where.rmdir()
        pytest.skip(f"this sandbox cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def fill(folder: Path) -> Path:
    """Write a file until the file system has no byte left."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    return filler


def test_a_full_file_system_stops_the_send_with_one_line(small_disk: Path) -> None:
    n = 300
    with SmtpServer() as server:
        cfg = make_config(small_disk, server.port, n=n, smtp="  rate_per_second: 30")
        proc = start(cfg)
        try:
            wait_for(lambda: len(server.received) >= 5, 60)
            filler = fill(small_disk)
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
        state = small_disk / "state.db"
        assert_stopped_on_the_state_file(out, state, proc.returncode)
        assert len(server.received) < n  # it stopped, it did not go on sending
        filler.unlink()
        assert os.path.ismount(small_disk)
        before = statuses(state)
        assert set(before) <= {"sent", "sending", "pending"} and before["pending"], before
        assert len(server.received) == before["sent"] + before["sending"]
        make_config(small_disk, server.port, n=n)  # the rest at full speed
        assert_resumed_without_loss_or_duplicate(cfg, state, server, n, before["sending"])
