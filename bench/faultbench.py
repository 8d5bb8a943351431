"""SMTP faults, measured as an operator meets them: ``python -m bench.faultbench [RECIPIENTS]``.

Runs ``newsletter send`` (a real process, default ``smtp`` settings but the host) against the
misbehaving servers of ``tests/smtpserver.py`` and prints, as JSON:

- down: the server refuses connections, or accepts them and never greets: seconds until the
  send exits, its exit code, and the ledger's rows by status (everyone should be pending);
- greylist: 30% of recipients get a 451 on every try of the first run (1 + max_retries): the
  first run defers them, the second delivers them: per run, seconds and the ledger.

Needs the test extras (aiosmtpd). Takes about a minute and a half with the defaults (the
never-greeting server costs (max_retries + 1) x connect_timeout plus the backoff).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from tests.smtpserver import BrokenServer, Faults, SmtpServer, free_port
from tests.test_send import DAY, SAVED, make_config


def config(folder: Path, port: int, recipients: int) -> Path:
    """The tests' config, but with the default retry, backoff and timeouts."""
    path = make_config(folder, port, n=recipients)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("  retry_backoff: 0\n  timeout: 5\n", ""), encoding="utf-8")
    return path


def send(cfg: Path) -> dict[str, Any]:
    env = {**os.environ, "NEWSLETTER_SECRET": "faultbench-signing-key-0123456789abcdef"}
    cmd = [sys.executable, "-m", "newsletter", "send", "-c", str(cfg), "--from", str(SAVED)]
    start = time.perf_counter()
    done = subprocess.run(
        [*cmd, "--date", DAY], env=env, capture_output=True, text=True, timeout=3600
    )
    seconds = time.perf_counter() - start
    db = sqlite3.connect(cfg.parent / "state.db")
    rows = Counter(dict(db.execute("SELECT status, COUNT(*) FROM ledger GROUP BY status")))
    db.close()
    stopped = [line for line in done.stderr.splitlines() if "stopped" in line]
    return {
        "seconds": round(seconds, 1),
        "exit": done.returncode,
        "ledger": dict(rows),
        "line": stopped[0] if stopped else None,
    }


def down(kind: str, recipients: int) -> dict[str, Any]:
    server: AbstractContextManager[Any]
    if kind == "refused":
        port, server = free_port(), nullcontext()
    else:
        broken = BrokenServer(None)  # accepts, never greets
        port, server = broken.port, broken
    with tempfile.TemporaryDirectory(prefix="faultbench-") as folder, server:
        return send(config(Path(folder), port, recipients))


def greylist(recipients: int) -> dict[str, Any]:
    # Default max_retries is 3: 4 tries in the first run, all refused for these recipients.
    faults = Faults(temp_fail_share=0.3, temp_fail_times=4)
    with tempfile.TemporaryDirectory(prefix="faultbench-") as folder, SmtpServer(faults) as server:
        cfg = config(Path(folder), server.port, recipients)
        runs = [send(cfg), send(cfg)]
        got = server.handler.count()
        return {
            "runs": runs,
            "greylisted": sum(1 for n in server.handler.attempts.values() if n > 1),
            "delivered_once": sum(1 for n in got.values() if n == 1),
            "duplicates": sum(n - 1 for n in got.values()),
        }


def run(recipients: int = 2000) -> dict[str, Any]:
    return {
        "recipients": recipients,
        "down_refused": down("refused", recipients),
        "down_never_greets": down("silent", recipients),
        "greylist_30pct": greylist(recipients),
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))
