"""kill -9 a sending process again and again: nobody is lost, duplicates stay within `unknown`."""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.smtpserver import SmtpServer
from tests.test_send import DAY, SAVED, addresses, make_config

RECIPIENTS = 500
KILLS = 20


def start(cfg: Path, *args: str) -> subprocess.Popen[str]:
    """``newsletter send`` of DAY from the saved capture, in the config's folder (as an
    instance on its own machine), its output merged for the test to read."""
    env = {**os.environ, "NEWSLETTER_SECRET": "crash-test-key-of-at-least-32-bytes"}
    cmd = [
        sys.executable,
        "-m",
        "newsletter",
        "send",
        "-c",
        str(cfg),
        "--from",
        str(SAVED),
        "--date",
        DAY,
        *args,
    ]
    return subprocess.Popen(
        cmd, cwd=cfg.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
def test_killed_sends_lose_nothing_and_duplicate_at_most_the_unknown(tmp_path: Path) -> None:
    rng = random.Random(20261124)
    with SmtpServer() as server:
        # Slow enough that the send spans many kills; the default 4 connections.
        cfg = make_config(tmp_path, server.port, n=RECIPIENTS, smtp="  rate_per_second: 40")
        kills: list[int] = []  # messages the server had at each kill
        early = ""  # the output of a process that ended before its kill
        # The next process starts while this one sends and waits for the send lock, which
        # the kill frees: each kill lands in a send, not in a process starting up.
        sending = start(cfg, "--wait", "60")
        for _ in range(200):
            if len(kills) >= KILLS:
                break
            before = len(server.received)
            if len(kills) == KILLS - 1:  # the process that finishes the send: at full speed
                make_config(tmp_path, server.port, n=RECIPIENTS)
            waiting = start(cfg, "--wait", "60")
            # Kill while it delivers: once the server has a new message, at a random moment.
            deadline = time.monotonic() + 20
            while (
                len(server.received) == before
                and sending.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.5))
            if sending.poll() is not None:
                # It finished before its kill: say how, or a failure reads as "too fast".
                early, _ = sending.communicate()
                sending = waiting
                break
            sending.send_signal(signal.SIGKILL)
            sending.wait()
            kills.append(len(server.received))
            sending = waiting
        out, _ = sending.communicate(timeout=120)  # the last one finishes the send
        assert sending.returncode == 0, out
        assert len(kills) >= KILLS, (
            f"the send finished after {len(kills)} kills: slow it down; it said:\n{early}"
        )
        assert kills[0] < RECIPIENTS / 2 and kills[-1] < RECIPIENTS, kills  # spread over the send
        assert sum(b > a for a, b in itertools.pairwise(kills)) >= KILLS // 2, kills

        db = sqlite3.connect(tmp_path / "state.db")
        statuses = Counter(
            dict(db.execute("SELECT status, COUNT(*) FROM ledger GROUP BY status").fetchall())
        )
        unknown = statuses["unknown"]
        assert statuses["sent"] + unknown == RECIPIENTS, statuses
        assert re.search(rf"^  unknown\s+{unknown}$", out, re.M), out  # the run reports them

        retry = start(cfg, "--retry-unknown")
        out, _ = retry.communicate(timeout=120)
        assert retry.returncode == 0, out

    got = server.handler.count()
    lost = set(addresses(RECIPIENTS)) - set(got)
    duplicates = sum(n - 1 for n in got.values())
    print(
        f"kills={len(kills)} unknown={unknown} duplicates={duplicates} received={sum(got.values())}"
    )
    assert not lost, f"lost: {sorted(lost)[:10]}"
    assert duplicates <= unknown, (duplicates, unknown)
    assert unknown <= 4 * len(kills)  # at most the messages in flight at each kill
