"""Several sending processes, each in its own working folder, share one run on PostgreSQL:
every recipient once, the work spread over them, and a killed one's batch taken over."""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from newsletter.store import open_store
from tests.clock import FakeClock
from tests.httpserver import FixtureServer
from tests.servers.postgres import Database
from tests.smtpserver import SmtpServer, free_port
from tests.test_send import DAY, SAVED, addresses, make_config
from tests.test_serve import MAY_8, daemon_in_process, write_config

pytest_plugins = ["tests.servers.fixtures"]

RECIPIENTS = 10_000


def instance_config(tmp_path: Path, name: str, port: int, url: str, smtp: str = "") -> Path:
    """The config of one instance, in a folder of its own (as on its own machine)."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return make_config(folder, port, n=RECIPIENTS, smtp=smtp, state=url)


def start(cfg: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "NEWSLETTER_SECRET": "instances-test-key-of-at-least-32-bytes"}
    cmd = [sys.executable, "-m", "newsletter", "send", "-c", str(cfg), "--from", str(SAVED)]
    return subprocess.Popen(
        [*cmd, "--date", DAY],
        cwd=cfg.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def sent_by(output: str) -> int:
    """What the process says it sent itself."""
    found = re.search(r"^this process: (\d+) sent", output, re.M)
    return int(found.group(1)) if found else 0


def statuses(url: str) -> Counter[str]:
    with open_store(url, read_only=True) as store:
        rows = store.db.execute("SELECT status, COUNT(*) FROM ledger GROUP BY status").fetchall()
    return Counter(dict(rows))


def unknown_emails(url: str) -> set[str]:
    with open_store(url, read_only=True) as store:
        rows = store.db.execute("SELECT email FROM ledger WHERE status = 'unknown'").fetchall()
    return {row[0] for row in rows}


def test_three_instances_deliver_one_run_each_recipient_once(
    tmp_path: Path, postgres_db: Database
) -> None:
    with SmtpServer(keep_data=False) as server:
        configs = [
            instance_config(tmp_path, name, server.port, postgres_db.url)
            for name in ("a", "b", "c")
        ]
        procs = [start(cfg) for cfg in configs]
        outputs = [p.communicate(timeout=600)[0] for p in procs]
        for proc, out in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, out[-2000:]
        got = server.handler.count()
    shares = [sent_by(out) for out in outputs]
    print(f"instances={shares} received={sum(got.values())}")
    assert sorted(got) == sorted(addresses(RECIPIENTS))
    assert set(got.values()) == {1}  # nobody twice
    assert sum(shares) == RECIPIENTS
    assert all(n >= RECIPIENTS * 0.2 for n in shares), shares
    assert statuses(postgres_db.url) == {"sent": RECIPIENTS}


def test_one_of_two_instances_killed_five_times_loses_nobody(
    tmp_path: Path, postgres_db: Database
) -> None:
    rng = random.Random(20261130)
    smtp = "  claim_lease_seconds: 5"  # a dead instance's batch goes to the other soon
    with SmtpServer(keep_data=False) as server:
        steady = start(instance_config(tmp_path, "steady", server.port, postgres_db.url, smtp))
        killed_cfg = instance_config(tmp_path, "killed", server.port, postgres_db.url, smtp)
        kills = 0
        victim = start(killed_cfg)
        while kills < 5:
            # Kill while it delivers: once the sink has new messages, at a random moment.
            before = len(server.received)
            deadline = time.monotonic() + 60
            while len(server.received) < before + 50 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.5, 2.0))
            if victim.poll() is not None or steady.poll() is not None:
                break  # the run is done: no more to kill in
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            victim = start(killed_cfg)
        outputs = [p.communicate(timeout=600)[0] for p in (steady, victim)]
        for proc, out in zip((steady, victim), outputs, strict=True):
            assert proc.returncode == 0, out[-2000:]
        got = server.handler.count()
    found = statuses(postgres_db.url)
    unknown = found["unknown"]
    lost = set(addresses(RECIPIENTS)) - set(got)
    duplicates = sum(n - 1 for n in got.values())
    print(f"kills={kills} unknown={unknown} duplicates={duplicates} received={sum(got.values())}")
    assert kills == 5, f"the run finished after {kills} kills"
    assert found["sent"] + unknown == RECIPIENTS, found
    # Lost is neither received nor reported: a row killed between its `sending` mark and the
    # sink's 250 is `unknown`, reported for --retry-unknown, whether or not the sink had it.
    assert not lost - unknown_emails(postgres_db.url), f"lost: {sorted(lost)[:10]}"
    assert duplicates <= unknown, (duplicates, unknown)
    # The last process to finish reports the day's run, unknown rows included.
    assert any(re.search(rf"^  unknown\s+{unknown}$", out, re.M) for out in outputs) or not unknown


def test_two_serves_on_one_database_send_each_scheduled_digest_once(
    tmp_path: Path,
    postgres_db: Database,
    hf_server: FixtureServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="newsletter.schedule")
    clock = FakeClock(MAY_8)  # both instances on one simulated clock: they fire together
    people = [
        ("ada@example.org", "08:00"),
        ("bob@example.org", "08:00"),
        ("cy@example.org", "09:00"),
    ]
    with SmtpServer() as smtp:
        configs = []
        for name in ("one", "two"):
            (tmp_path / name).mkdir()
            cfg = write_config(
                tmp_path / name / "c.yaml", hf_server, smtp.port, free_port(), people
            )
            cfg.write_text(cfg.read_text().replace("state: state.db", f"state: {postgres_db.url}"))
            configs.append(cfg)
        with daemon_in_process(configs[0], clock), daemon_in_process(configs[1], clock):
            clock.run_until(lambda: len(smtp.received) == 3, limit=3 * 3600)
            clock.run_until(lambda: clock() >= MAY_8 + dt.timedelta(hours=3), limit=4 * 3600)
        got = smtp.handler.count()
    assert got == {"ada@example.org": 1, "bob@example.org": 1, "cy@example.org": 1}
    skipped = [r for r in caplog.records if r.getMessage().startswith("schedule.skipped")]
    assert len(skipped) == 2, [r.getMessage() for r in skipped]  # 08:00 and 09:00, once each
