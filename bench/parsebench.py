"""Parse: milliseconds per Hugging Face page and per API response (the production parsers)."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

from bench.workload import FIXTURES
from newsletter.models import PaperData
from newsletter.sources import huggingface


def per_call_ms(fn: Callable[[], Any], min_seconds: float = 1.0) -> tuple[float, float]:
    """(mean, best) milliseconds per call over at least ``min_seconds`` and 5 calls."""
    fn()  # warm up
    times: list[float] = []
    total = 0.0
    while total < min_seconds or len(times) < 5:
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        total += elapsed
    return total / len(times) * 1000, min(times) * 1000


@dataclasses.dataclass(frozen=True)
class Row:
    file: str
    kind: str  # "api" or "page"
    kb: float
    papers: int
    mean_ms: float
    best_ms: float


def run(min_seconds: float = 1.0) -> dict[str, Any]:
    rows: list[Row] = []
    for path in sorted(FIXTURES.glob("hf_*")):
        body = path.read_bytes()
        parser: Callable[[bytes, str], list[PaperData]] = (
            huggingface.parse_page if path.suffix == ".html" else huggingface.parse
        )
        call = functools.partial(parser, body, str(path))
        mean, best = per_call_ms(call, min_seconds)
        kind = "page" if path.suffix == ".html" else "api"
        rows.append(Row(path.name, kind, len(body) / 1000, len(call()), mean, best))
    api = [r for r in rows if r.kind == "api"]
    daily = next(r for r in rows if r.file.startswith("hf_html_daily"))
    return {
        "files": [dataclasses.asdict(r) for r in rows],
        "api_mean_ms": sum(r.mean_ms for r in api) / len(api),
        "daily_page_mean_ms": daily.mean_ms,
        "daily_page_best_ms": daily.best_ms,
    }
