"""Peak resident memory of a process and all its descendants, summed, sampled from /proc."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone already
        ppid = int(stat.rpartition(")")[2].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(root: int) -> tuple[int, int]:
    """(summed VmRSS in KB, number of processes) of ``root`` and its descendants now."""
    tree = _children()
    total, count, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        total += _rss_kb(pid)
        count += 1
        todo.extend(tree.get(pid, []))
    return total, count


class PeakSampler:
    """Samples a process tree every ``interval`` seconds in a thread; keeps the peak sum."""

    def __init__(self, root: int | None = None, interval: float = 0.05) -> None:
        self.root = root or os.getpid()
        self.interval = interval
        self.peak_kb = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            kb, n = tree_rss_kb(self.root)
            if kb > self.peak_kb:
                self.peak_kb, self.peak_processes = kb, n
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measured(command: list[str]) -> dict[str, Any]:
    """Run ``command`` (a benchmark printing one JSON object), its process tree sampled: the
    object, with the wall time from start to exit and the peak RSS summed over the tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    with PeakSampler(proc.pid) as sampler:
        out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out)
    result["wall_seconds_with_startup"] = time.perf_counter() - start
    result["peak_rss_mb"] = sampler.peak_kb / 1024
    result["peak_processes"] = sampler.peak_processes
    return result
