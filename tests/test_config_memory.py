"""What a loaded config holds for its subscribers: a send keeps it for the whole command."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

from newsletter import config, models

COUNT = 2_000


def _file(path: Path) -> Path:
    lines = ["topics:", "  ml:", "    keywords: [learning]", "  cv:", "    keywords: [vision]"]
    lines.append("subscribers:")
    for i in range(COUNT):
        lines += [f"  - email: reader{i}@example.org", f'    name: "Reader {i}"']
        lines.append("    topics: [ml, cv]" if i % 2 else "    topics: [ml]")
        if i % 3 == 0:
            lines += ["    max_papers: 5", "    keywords: [diffusion]", "    send_at: '07:30'"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_files_subscribers_are_kept_as_the_subscribers_a_run_mails(tmp_path: Path) -> None:
    loaded = config.load(_file(tmp_path / "c.yaml"))
    subs = loaded.subscribers
    assert len(subs) == COUNT and all(type(s) is models.Subscriber for s in subs)
    assert loaded.subscriber_models() == subs
    assert subs[0] == models.Subscriber(
        email="reader0@example.org",
        name="Reader 0",
        topics=("ml",),
        max_papers=5,
        keywords=("diffusion",),
        send_at=config.parse_time("07:30"),
    )
    assert subs[1].topics is subs[3].topics  # one tuple for the same topics


def test_a_loaded_subscriber_costs_a_few_hundred_bytes(tmp_path: Path) -> None:
    """A pydantic model per subscriber kept ~1.1 KB each (~110 MB of 100,000); the
    ``Subscriber`` and its strings ~330 B."""
    path = _file(tmp_path / "c.yaml")
    config.load(path)  # imports and caches warmed up
    gc.collect()
    tracemalloc.start()
    try:
        loaded = config.load(path)
        gc.collect()
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(loaded.subscribers) == COUNT
    assert kept / COUNT < 600, f"{kept / COUNT:.0f} bytes a subscriber"
