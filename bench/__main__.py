"""Every benchmark, one command: ``.venv/bin/python -m bench`` (from the repository root).

    parse   ms per Hugging Face page and API response          (this process)
    build   10,000 subscribers: digests/s, production path      (child process, RSS sampled)
            and the naive baseline on the first --naive digests  (same child, one process)
    memory  100,000 subscribers: time and peak RSS summed over   (child process + its pool)
            every process of the build
    send    messages/s to an aiosmtpd sink (another process):    (this process + the sink)
            raw aiosmtplib vs SmtpSender vs SmtpSender + ledger
    instances  messages/s of whole `send` processes to one sink:   (child processes)
            one on SQLite, one on PostgreSQL, two on PostgreSQL (not in the default set:
            ``--only instances``; it starts a throwaway PostgreSQL cluster)
    e2e     `newsletter send` for 20,000 and 100,000 subscribers  (a subprocess + the sink)
            (in the YAML file, in the store), start to exit, vs
            raw aiosmtplib pushing the same messages; peak RSS
    store   10,000, 100,000 and 1,000,000 readers in the store:   (child process + its pool)
            read, select and build every digest, discard; time
            and peak RSS (the 1,000,000 alone takes ~10 minutes)

``--quick`` shrinks everything to check that the benchmarks run (figures meaningless).
Run nothing else heavy at the same time: the machine's cores are the thing measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from bench import e2e, instancebench, parsebench, sendbench, storebench
from bench.rss import measured

TARGETS = {
    "build_digests_per_s": 5_000,
    "build_vs_naive": 15,
    "seconds_100k": 30,
    "peak_rss_mb_100k": 300,
    "send_vs_raw": 0.9,
    "e2e_vs_raw": 0.9,
    "e2e_peak_rss_mb_100k": 400,
    "page_parse_ms": 30,
}


STORE_SIZES = [10_000, 100_000, 1_000_000]
PARTS = ["parse", "build", "memory", "send", "e2e", "store"]


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def build_child(subscribers: int, naive: int, outbox: Path | None) -> dict[str, Any]:
    """``bench.buildbench`` in a child process, its memory (and its pool's) sampled."""
    command = [sys.executable, "-m", "bench.buildbench", "--subscribers", str(subscribers)]
    if naive:
        command += ["--naive", str(naive)]
    if outbox:
        command += ["--outbox", str(outbox)]
    return measured(command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    # instances is not in the default set: it starts a throwaway PostgreSQL cluster
    parser.add_argument("--only", choices=[*PARTS, "instances"], action="append")
    parser.add_argument("--naive", type=int, default=300, help="digests for the naive baseline")
    parser.add_argument("--outbox", type=Path, default=None, help="write the 10k build here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    only = set(args.only or PARTS)
    small, large = (500, 2_000) if args.quick else (10_000, 100_000)
    naive = 20 if args.quick else args.naive

    results: dict[str, Any] = {"machine": machine(), "command": " ".join(sys.argv)}
    print(json.dumps(results["machine"]), flush=True)
    if "parse" in only:
        results["parse"] = parsebench.run(0.2 if args.quick else 2.0)
        print("parse", json.dumps({k: v for k, v in results["parse"].items() if k != "files"}))
    if "build" in only:
        results["build"] = build_child(small, naive, args.outbox)
        print("build", json.dumps(results["build"]), flush=True)
    if "memory" in only:
        results["memory"] = build_child(large, 0, None)
        print("memory", json.dumps(results["memory"]), flush=True)
    if "send" in only:
        results["send"] = sendbench.run(300 if args.quick else 3_000, rounds=1 if args.quick else 3)
        print("send", json.dumps(results["send"]), flush=True)
    if "instances" in only:
        results["instances"] = instancebench.run(300 if args.quick else 5_000)
        print("instances", json.dumps(results["instances"]), flush=True)
    if "e2e" in only:
        sizes, papers = ((200, 400), 300) if args.quick else ((20_000, 100_000), 2_000)
        results["e2e"] = e2e.run(sizes, papers)
    if "store" in only:
        results["store"] = storebench.run([300, 1_000] if args.quick else STORE_SIZES)
    summary(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def summary(r: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    if "parse" in r:
        p = r["parse"]
        rows.append(("parse: daily page (223 KB), ms", f"{p['daily_page_mean_ms']:.1f}", "< 30"))
        rows.append(("parse: API response, mean ms", f"{p['api_mean_ms']:.2f}", ""))
    if "build" in r:
        fast, base = r["build"]["fast"], r["build"].get("naive")
        rows.append(
            (
                f"build {fast['subscribers']:,} subscribers, digests/s end to end",
                f"{fast['digests_per_s']:,.0f}",
                ">= 5,000",
            )
        )
        rows.append(
            ("build: digests/s after the first", f"{fast['steady_digests_per_s']:,.0f}", "")
        )
        rows.append(
            (
                "build: messages, MB, sha256",
                f"{fast['messages']:,}, {fast['bytes'] / 1e6:.1f}, {fast['sha256'][:16]}",
                "",
            )
        )
        if base:
            rows.append(
                ("naive baseline, digests/s (1 process)", f"{base['digests_per_s']:.1f}", "")
            )
            ratio = fast["digests_per_s"] / base["digests_per_s"]
            rows.append(("build / naive", f"{ratio:.0f}x", ">= 15x"))
    if "memory" in r:
        m = r["memory"]
        rows.append(
            (
                f"build {m['fast']['subscribers']:,} subscribers, seconds",
                f"{m['fast']['seconds']:.1f}",
                "< 30",
            )
        )
        rows.append(
            (
                "  peak RSS, all processes, MB",
                f"{m['peak_rss_mb']:.0f} ({m['peak_processes']} processes)",
                "< 300",
            )
        )
    if "send" in r:
        s = r["send"]
        rows.append(("send: raw aiosmtplib, msgs/s", f"{s['best']['raw']:,.0f}", ""))
        rows.append(("send: SmtpSender, msgs/s", f"{s['best']['sender']:,.0f}", ""))
        rows.append(("send: SmtpSender + ledger, msgs/s", f"{s['best']['sender_ledger']:,.0f}", ""))
        rows.append(
            ("send: SmtpSender + ledger / raw", f"{s['sender_ledger_vs_raw']:.0%}", ">= 90%")
        )
    if "instances" in r:
        i = r["instances"]
        for name, label in (
            ("sqlite", "one instance, SQLite"),
            ("postgres", "one instance, PostgreSQL"),
            ("postgres2", "two instances, PostgreSQL"),
        ):
            rows.append(
                (
                    f"send {i['recipients']:,}: {label}, msgs/s",
                    f"{i[name]['messages_per_s']:,.0f}",
                    "",
                )
            )
    if "e2e" in r:
        for run in r["e2e"]["runs"]:
            name = f"e2e: send {run['subscribers']:,} ({run['origin']}), s / msgs/s"
            rows.append((name, f"{run['wall_seconds']:.1f} / {run['msgs_per_s']:,.0f}", ""))
            raw = run["raw"]
            rows.append(
                (
                    "  raw aiosmtplib, same messages, s / msgs/s",
                    f"{raw['wall_seconds']:.1f} / {raw['msgs_per_s']:,.0f}",
                    "",
                )
            )
            rows.append(("  send / raw", f"{run['vs_raw']:.0%}", ">= 90%"))
            rss = f"{run['peak_rss_mb']:.0f} ({run['peak_processes']} processes)"
            rows.append(("  peak RSS of the send, MB", rss, "< 400 at 100,000"))
    for run in r.get("store", {}).get("runs", []):
        rows.append(
            (
                f"store: {run['subscribers']:,} readers, read + select + build, s",
                f"{run['seconds']:.1f} ({run['digests_per_s']:,.0f}/s)",
                "",
            )
        )
        rows.append(
            (
                "  peak RSS, all processes, MB",
                f"{run['peak_rss_mb']:.0f} ({run['peak_processes']} processes)",
                "< 1,000 at 1,000,000",
            )
        )
    width = max((len(a) for a, _, _ in rows), default=0)
    print()
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>28}  {target}")
    for line in r.get("e2e", {}).get("skipped", []):
        print(f"e2e: {line}")
    for line in r.get("store", {}).get("skipped", []):
        print(f"store: {line}")


if __name__ == "__main__":
    main()
