"""Several sending processes, each in its own working folder, share one run on PostgreSQL:
every recipient once, the work spread over them, and a killed one's batch taken over."""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from newsletter.store import open_store
from tests import signup_site as site
from tests.clock import FakeClock
from tests.httpserver import FixtureServer
from tests.servers.dovecot import Mailbox
from tests.servers.postgres import Database
from tests.smtpserver import SmtpServer, free_port
from tests.test_crash import start
from tests.test_send import addresses, make_config
from tests.test_serve import MAY_8, daemon_in_process, wait_for, write_config
from tests.test_serve import Daemon as ServeProcess

pytest_plugins = ["tests.servers.fixtures"]

RECIPIENTS = 10_000


def instance_config(tmp_path: Path, name: str, port: int, url: str, smtp: str = "") -> Path:
    """The config of one instance, in a folder of its own (as on its own machine)."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return make_config(folder, port, n=RECIPIENTS, smtp=smtp, state=url)


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


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_two_serves_poll_the_bounce_mailbox_once_per_period(
    tmp_path: Path,
    postgres_db: Database,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", mailbox.password)
    caplog.set_level(logging.INFO, logger="newsletter")
    imap = (
        f"inbound:\n  poll_minutes: 5\n  imap:\n    host: {mailbox.host}\n"
        f"    port: {mailbox.port}\n    security: none\n    username: {mailbox.address}\n"
        "    password_env: TEST_IMAP_PASSWORD\n"
    )
    clock = FakeClock(site.NOW)  # 07:00: the first five-minute period starts with the test
    with SmtpServer() as smtp:
        daemons = []
        for name in ("one", "two"):
            (tmp_path / name).mkdir()
            cfg = site.write_config(tmp_path / name, smtp.port, free_port(), extra=imap)
            cfg.write_text(cfg.read_text().replace("state: state.db", f"state: {postgres_db.url}"))
            daemons.append(daemon_in_process(cfg, clock))
        with daemons[0], daemons[1]:

            def both_wait() -> bool:  # each serve's poll done and waiting for its next
                pollers = {
                    t.ident or 0 for t in threading.enumerate() if t.name == "newsletter-inbound"
                }
                with clock.changed:
                    waits = [clock.deadlines.get(p) for p in pollers]
                    return len(pollers) == 2 and all(w and w > clock.now for w in waits)

            for _ in range(30):  # minute by minute to 07:30, each poll seen through
                wait_for(both_wait, 30)
                clock.advance(60)
            wait_for(both_wait, 30)
    passes = [r for r in caplog.records if r.getMessage().startswith("inbound.imap_pass")]
    # 07:00, 07:05 ... 07:30: seven periods, each read by one of the two serves (each serve
    # polls in all seven: without the database saying who goes first, fourteen reads).
    assert len(passes) == 7, [r.getMessage() for r in passes]


def test_the_same_addresses_signing_up_on_two_serves_at_once_get_one_email_each(
    tmp_path: Path, postgres_db: Database
) -> None:
    addresses = [f"twice{i}@example.org" for i in range(8)]
    with SmtpServer() as smtp:
        serves, roots = [], []
        for name in ("one", "two"):
            (tmp_path / name).mkdir()
            port = free_port()
            cfg = site.write_config(tmp_path / name, smtp.port, port)
            cfg.write_text(cfg.read_text().replace("state: state.db", f"state: {postgres_db.url}"))
            serves.append(ServeProcess(cfg))
            roots.append(f"http://127.0.0.1:{port}")
        try:
            visitors = [[site.Visitor(f"203.0.113.{i}") for i in range(2)] for _ in addresses]
            tokens = [
                [v.form_token(root + "/") for v, root in zip(pair, roots, strict=True)]
                for pair in visitors
            ]
            pages: list[tuple[int, str]] = []

            def post(pair: int, which: int, start: threading.Barrier) -> None:
                fields: dict[str, str | list[str]] = {
                    "form_token": tokens[pair][which],
                    "email": addresses[pair],
                    "topics": ["agents"],
                    "cadence": "daily",
                    "website": "",
                }
                start.wait()
                pages.append(visitors[pair][which].post(roots[which] + "/subscribe", fields))

            for pair in range(len(addresses)):
                start = threading.Barrier(2)  # the two serves get the address at one moment
                both = [
                    threading.Thread(target=post, args=(pair, which, start)) for which in (0, 1)
                ]
                for t in both:
                    t.start()
                for t in both:
                    t.join(60)
            wait_for(lambda: len(smtp.received) >= len(addresses), 60)
        finally:
            codes = [s.stop() for s in serves]  # a stop sends what the outbox still holds
        logs = "\n".join(s.log() for s in serves)
    assert codes == [0, 0], logs
    assert [p[0] for p in pages] == [200] * 2 * len(addresses), logs
    assert "Traceback" not in logs and "Error" not in logs, logs
    got = smtp.handler.count()
    assert got == dict.fromkeys(addresses, 1), got  # one confirmation each, not one per serve
    with open_store(postgres_db.url, read_only=True) as store:
        rows = {r.email: r.status for r in store.subscribers()}
    assert rows == dict.fromkeys(addresses, "pending")
