"""The end-to-end and store benchmarks run (``python -m bench --quick --only e2e --only
store``): the real command line against a sink and raw aiosmtplib with the same messages;
every digest of readers held in the store built and thrown away. Their figures are not
judged here (the machine is shared); that they measure what they say is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_e2e_and_store_measure_what_they_say(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    parts = ["--only", "e2e", "--only", "store"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *parts, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    results = figures["e2e"]
    runs = {(r["origin"], r["subscribers"]): r for r in results["runs"]}
    assert {size for origin, size in runs if origin == "yaml"} == {200, 400}
    store_skipped = [line for line in results["skipped"] if line.startswith("origin store")]
    assert store_skipped or {size for origin, size in runs if origin == "store"} == {200, 400}
    for run in runs.values():
        # Every subscriber of the workload gets a digest; the sink got each one once.
        assert run["sent"] == run["messages"] == run["subscribers"]
        assert run["raw"]["bytes"] == round(run["avg_bytes"] * run["messages"])
        assert 10_000 < run["avg_bytes"] < 100_000
        assert run["peak_rss_mb"] > 20 and run["peak_processes"] >= 1
        assert run["vs_raw"] == run["msgs_per_s"] / run["raw"]["msgs_per_s"]
    assert "send / raw" in done.stdout and "peak RSS of the send" in done.stdout
    store = figures["store"]
    assert store["skipped"] == [] and [r["subscribers"] for r in store["runs"]] == [300, 1_000]
    for run in store["runs"]:
        # Every reader read from the store gets a digest, built and hashed.
        assert run["readers"] == run["messages"] == run["subscribers"]
        assert run["nothing_new"] == 0 and len(run["sha256"]) == 64
        assert run["peak_rss_mb"] > 20
    assert "store: 1,000 readers" in done.stdout
