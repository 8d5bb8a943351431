"""Instances: messages per second of whole ``newsletter send`` processes to one sink.

    sqlite    one instance, a SQLite state
    postgres  one instance, a PostgreSQL state (a throwaway cluster, tests/servers)
    postgres2 two instances at once on that state, each in its own folder

Each figure is the recipients over the wall time from starting the processes to the last
one's exit: loading the config, freezing the run (selecting every digest), composing and
sending, and the ledger's writes (three per message, plus a claim per batch on PostgreSQL).
The sink is ``bench.sink`` in a process of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.sendbench import Sink

ROOT = Path(__file__).resolve().parent.parent
SAVED = ROOT.parent / "shared" / "fixtures" / "hf_api_daily_papers_date_2026-05-08_37papers.json"
DAY = "2026-05-08"


def write_config(folder: Path, port: int, state: str, recipients: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    subs = "".join(
        f"  - email: r{i:06}@example.org\n    topics: [everything]\n    max_papers: 2\n"
        for i in range(recipients)
    )
    path = folder / "subs.yaml"
    path.write_text(
        f"""\
newsletter:
  from: "Bench Papers <papers@example.org>"
  state: {state}
smtp:
  host: 127.0.0.1
  port: {port}
  security: none
  connections: 4
topics:
  everything:
    keywords: [the, we]
subscribers:
{subs}""",
        encoding="utf-8",
    )
    return path


def run_instances(configs: list[Path]) -> tuple[float, list[str]]:
    env = {**os.environ, "NEWSLETTER_SECRET": "bench-signing-key-of-at-least-32-bytes"}
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
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
            ],
            cwd=cfg.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for cfg in configs
    ]
    outputs = [p.communicate()[0] for p in procs]
    elapsed = time.perf_counter() - start
    for proc, out in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(f"a send failed:\n{out[-2000:]}")
    return elapsed, outputs


def run(recipients: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.servers.postgres import PostgresCluster

    results: dict[str, Any] = {"recipients": recipients, "cores": len(os.sched_getaffinity(0))}
    with tempfile.TemporaryDirectory() as tmp, PostgresCluster() as cluster:
        folder = Path(tmp)
        for name, instances in (("sqlite", 1), ("postgres", 1), ("postgres2", 2)):
            sink = Sink()
            try:
                if name == "sqlite":
                    state = str(folder / name / "state.db")
                else:
                    state = cluster.create_database(f"bench_{name}").url
                configs = [
                    write_config(folder / name / f"i{i}", sink.port, state, recipients)
                    for i in range(instances)
                ]
                elapsed, _ = run_instances(configs)
            finally:
                accepted = sink.close()
            results[name] = {
                "instances": instances,
                "seconds": round(elapsed, 1),
                "messages_per_s": round(recipients / elapsed, 1),
                "sink_accepted": accepted["messages"],
            }
            print(name, results[name], flush=True)
    return results
