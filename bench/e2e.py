"""End to end: ``newsletter send`` as an operator runs it, against raw aiosmtplib.

For each size and origin of the subscribers (listed in the YAML file, or held in the
store), in a fresh folder:

1. ``newsletter send -c newsletter.yaml --from papers.json --date DAY`` runs as a
   subprocess (the installed console script: the real command line), timed from its start
   to its exit, its peak RSS summed over it and its pool (``bench.rss``), against an aiosmtpd
   sink in another process (``bench.sink``, not counted). The papers file is an API
   response of 2,000 papers over the 7 days of the default window, replicated from the real
   captures (as ``bench.workload``); the subscribers are the workload's, so every one gets a
   digest (about 9 papers, ~35 KB).
2. raw aiosmtplib then pushes the same number of pre-built messages of the same sizes (the
   sink reports the size of every message it accepted) over the same number of connections
   to a fresh sink: the rate the SMTP exchange itself allows on this machine.

``python -m bench.e2e --subscribers 20000 --origin yaml`` runs one and prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosmtplib

from bench import configfile, workload
from bench.rss import PeakSampler
from bench.sendbench import Sink

DAY = workload.DAY
CONNECTIONS = 4
SECRET = "e2e-benchmark-signing-key-0123456789abcdef"
ORIGINS = ("yaml", "store")


def papers_json(count: int, seed: int = 8) -> bytes:
    """An API response of ``count`` papers: the captures' items under new ids, spread over the
    window's days ending on DAY, upvotes varied (what ``workload.papers`` does to PaperData)."""
    rng = random.Random(seed)
    items: dict[str, Any] = {}
    for path in sorted(workload.FIXTURES.glob("hf_api_daily_papers_*.json")):
        for item in json.loads(path.read_bytes()):
            if isinstance(item, dict) and isinstance(item.get("paper"), dict):
                items.setdefault(str(item["paper"].get("id")), item)
    base = [items[k] for k in sorted(items)]
    out = []
    for i in range(count):
        item = copy.deepcopy(base[i % len(base)])
        day = DAY - dt.timedelta(days=i % workload.WINDOW_DAYS)
        paper = item["paper"]
        paper["id"] = f"{2611 - i // 100_000:04d}.{i % 100_000:05d}"
        paper["submittedOnDailyAt"] = f"{day.isoformat()}T08:00:00.000Z"
        upvotes = int(paper.get("upvotes") or 0)
        paper["upvotes"] = max(0, int(upvotes * rng.uniform(0.3, 1.7)) + rng.randint(0, 5))
        out.append(item)
    return json.dumps(out).encode()


def store_origin() -> str | None:
    """Why subscribers cannot be held in the store yet, or None when they can."""
    from bench import storebench

    return storebench.missing()


def fill_store(state: Path, subscribers: int) -> None:
    """The workload's subscribers as active readers of the store (issue 15's own fill)."""
    from bench import loadbench  # type: ignore[attr-defined]

    loadbench.fill(state, subscribers)


def command() -> list[str]:
    """The installed ``newsletter`` script beside this interpreter, as an operator runs it."""
    script = Path(sys.executable).parent / "newsletter"
    return [str(script)] if script.exists() else [sys.executable, "-m", "newsletter"]


def send(folder: Path, port: int) -> dict[str, Any]:
    """``newsletter send`` in ``folder``: wall time from start to exit, peak RSS of its tree."""
    args = [*command(), "send", "-c", "newsletter.yaml", "--from", "papers.json"]
    args += ["--date", DAY.isoformat()]
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, cwd=folder, env=env, stdout=out, stderr=err)
        with PeakSampler(proc.pid, interval=0.02) as sampler:
            code = proc.wait()
        wall = time.perf_counter() - start
    if code:
        tail = (folder / "stderr").read_text(errors="replace")[-2000:]
        raise SystemExit(f"{' '.join(args)} exited {code} in {folder}:\n{tail}")
    said = (folder / "stdout").read_text(errors="replace")
    sent = re.search(r"^this process: (\d+) sent", said, re.MULTILINE)
    return {
        "wall_seconds": wall,
        "peak_rss_mb": sampler.peak_kb / 1024,
        "peak_processes": sampler.peak_processes,
        "sent": int(sent.group(1)) if sent else 0,
    }


def _message(size: int, i: int) -> bytes:
    """``size`` bytes of a plain message: headers, then 76-character lines as QP writes them."""
    head = (
        f"From: papers@example.org\r\nTo: reader{i}@example.org\r\n"
        f"Subject: raw {i}\r\nMessage-ID: <{i}@raw.example.org>\r\n\r\n"
    ).encode()
    body = max(80, size - len(head))
    lines, rest = divmod(body, 78)  # the last line takes the rest: every line ends in CRLF
    return head + (b"x" * 76 + b"\r\n") * (lines - 1) + b"y" * (76 + rest) + b"\r\n"


async def _raw(messages: list[bytes], port: int, connections: int) -> None:
    todo = iter(enumerate(messages))

    async def worker() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        for i, data in todo:  # shared: each connection takes the next message
            await smtp.sendmail("bounces@example.org", [f"reader{i}@example.org"], data)
        await smtp.quit()

    await asyncio.gather(*(worker() for _ in range(connections)))


def raw(sizes: list[int], connections: int) -> dict[str, Any]:
    """Raw aiosmtplib: the same number of messages of the same sizes to a fresh sink."""
    messages = [_message(size, i) for i, size in enumerate(sizes)]
    sink = Sink(sizes=True)
    try:
        start = time.perf_counter()
        asyncio.run(_raw(messages, sink.port, connections))
        wall = time.perf_counter() - start
    finally:
        accepted = sink.close()
    assert accepted["messages"] == len(messages), accepted["messages"]
    return {"wall_seconds": wall, "msgs_per_s": len(messages) / wall, "bytes": accepted["bytes"]}


def one(subscribers: int, origin: str, papers: int, keep: Path | None = None) -> dict[str, Any]:
    """One end-to-end send and its raw aiosmtplib twin."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-e2e-{origin}-{subscribers}-"))
    try:
        sink = Sink(sizes=True)
        try:
            listed = subscribers if origin == "yaml" else 0
            configfile.write(folder / "newsletter.yaml", listed, sink.port)
            (folder / "papers.json").write_bytes(papers_json(papers))
            if origin == "store":
                fill_store(folder / "newsletter.db", subscribers)
            result = send(folder, sink.port)
        finally:
            accepted = sink.close()
        sizes: list[int] = accepted["sizes"]
        if result["sent"] != len(sizes) or not sizes:
            raise SystemExit(f"e2e: the send said {result['sent']} sent, the sink got {len(sizes)}")
        result.update(
            subscribers=subscribers,
            origin=origin,
            papers=papers,
            connections=CONNECTIONS,
            messages=len(sizes),
            avg_bytes=sum(sizes) / max(1, len(sizes)),
            msgs_per_s=len(sizes) / result["wall_seconds"],
        )
        result["raw"] = raw(sizes, CONNECTIONS)
        result["vs_raw"] = result["msgs_per_s"] / result["raw"]["msgs_per_s"]
        return result
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            shutil.copytree(folder, keep / folder.name)
            shutil.rmtree(folder, ignore_errors=True)


def run(sizes: tuple[int, ...], papers: int, origins: tuple[str, ...] = ORIGINS) -> dict[str, Any]:
    results: dict[str, Any] = {"runs": [], "skipped": []}
    for origin in origins:
        why = store_origin() if origin == "store" else None
        if why:
            results["skipped"].append(f"origin {origin}: {why}")
            print(f"e2e: origin {origin}: {why}", flush=True)
            continue
        for size in sizes:
            result = one(size, origin, papers)
            results["runs"].append(result)
            print("e2e", json.dumps(result), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--origin", choices=ORIGINS, default="yaml")
    parser.add_argument("--papers", type=int, default=2_000)
    parser.add_argument("--keep", type=Path, default=None, help="copy the run's folder here")
    args = parser.parse_args()
    print(json.dumps(one(args.subscribers, args.origin, args.papers, args.keep)))


if __name__ == "__main__":
    main()
