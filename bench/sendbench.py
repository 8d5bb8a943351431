"""Send: messages per second to an aiosmtpd sink in another process.

The same pre-built messages (the production build of the workload's first digests) go
three ways over the same number of connections, in turns:

- raw: aiosmtplib, one ``sendmail`` after another on each connection, nothing else;
- SmtpSender: the production sender (pool, per-message transaction, outcome events),
  with events that do nothing;
- SmtpSender + ledger: as a real send, with the ledger's Recorder (its Events) committing each
  message's transitions to SQLite (WAL) as they happen.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosmtplib

from bench import buildbench, workload
from newsletter import compose, ledger
from newsletter.deliver import Outcome, SmtpSender, SmtpSettings
from newsletter.models import Digest, Outgoing
from newsletter.store import SqliteStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """``bench.sink`` in a child process (``sizes``: it reports each message's size too)."""

    def __init__(self, sizes: bool = False) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sink", str(self.port), *(["--sizes"] if sizes else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def close(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        result: dict[str, Any] = json.loads(self.proc.stdout.read())
        self.proc.wait()
        return result


def prebuilt(count: int) -> tuple[list[Digest], list[Outgoing]]:
    w = workload.make(max(count * 2, 1000))
    matches = buildbench.match(w)
    digests: list[Digest] = []
    for d in buildbench.digests(matches, w.subscriber_models()):
        digests.append(d)
        if len(digests) >= count:
            break
    # The bytes are what is sent; the bodies in .email are not needed to send (the ledger
    # reads paper_ids only) and would cost memory.
    messages = list(
        compose.compose_many(buildbench.SPEC, digests, count=len(digests), bodies=False, workers=2)
    )
    return digests, messages


async def _raw(messages: list[Outgoing], port: int, connections: int) -> None:
    source = iter(messages)

    async def worker() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        for m in source:  # shared: each connection takes the next message
            await smtp.sendmail(m.envelope_from, [m.recipient], m.data)
        await smtp.quit()

    await asyncio.gather(*(worker() for _ in range(connections)))


def raw(messages: list[Outgoing], port: int, connections: int) -> float:
    start = time.perf_counter()
    asyncio.run(_raw(messages, port, connections))
    return time.perf_counter() - start


class NoEvents:
    def __init__(self) -> None:
        self.sent = 0

    def started(self, message: Outgoing) -> None:
        pass

    def retrying(self, message: Outgoing, detail: str) -> None:
        pass

    def finished(self, message: Outgoing, outcome: Outcome) -> None:
        self.sent += outcome.status == "sent"


def sender(
    messages: list[Outgoing], digests: list[Digest] | None, port: int, connections: int
) -> tuple[float, int]:
    settings = SmtpSettings(host="127.0.0.1", port=port, security="none", connections=connections)
    smtp = SmtpSender(settings)
    if digests is None:
        events: Any = NoEvents()
        start = time.perf_counter()
        smtp.send_all(iter(messages), events)
        return time.perf_counter() - start, events.sent
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as folder:
        store = SqliteStore(Path(folder) / "state.db")
        now = workload.NOW
        run = ledger.open_run(store, workload.DAY, lambda: dt.datetime.now(dt.UTC))
        store.freeze(run.id, digests, now)
        recorder = run.recorder(run.due(retry_unknown=False, daily_cap=None), max_deferrals=3)
        start = time.perf_counter()
        smtp.send_all(iter(messages), recorder)
        elapsed = time.perf_counter() - start
        sent = store.run_counts(run.id)["sent"]
        store.close()
    return elapsed, sent


def run(count: int = 3000, connections: int = 4, rounds: int = 2) -> dict[str, Any]:
    digests, messages = prebuilt(count)
    size = sum(len(m.data) for m in messages)
    sink = Sink()
    try:
        raw(messages[:200], sink.port, connections)  # warm up the sink and the page cache
        rates: dict[str, list[float]] = {"raw": [], "sender": [], "sender_ledger": []}
        for _ in range(rounds):
            rates["raw"].append(len(messages) / raw(messages, sink.port, connections))
            elapsed, sent = sender(messages, None, sink.port, connections)
            assert sent == len(messages), sent
            rates["sender"].append(len(messages) / elapsed)
            elapsed, sent = sender(messages, digests, sink.port, connections)
            assert sent == len(messages), sent
            rates["sender_ledger"].append(len(messages) / elapsed)
    finally:
        accepted = sink.close()
    best = {k: max(v) for k, v in rates.items()}
    return {
        "messages": len(messages),
        "avg_bytes": size / len(messages),
        "connections": connections,
        "rounds": rates,
        "best": best,
        "sender_vs_raw": best["sender"] / best["raw"],
        "sender_ledger_vs_raw": best["sender_ledger"] / best["raw"],
        "sink_accepted": accepted,
    }


def _main() -> None:
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)))


if __name__ == "__main__":
    _main()
