"""collector.paused(): the cycle collector off inside, as it was after, even on an error;
collector.trim(): what a stage freed goes back to the system."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from newsletter import collector


def test_paused_inside_and_restored_after() -> None:
    assert gc.isenabled()
    with collector.paused():
        assert not gc.isenabled()
        with collector.paused():  # nested: the outer one turns it back on
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), collector.paused():
        raise ValueError
    assert gc.isenabled()


def test_left_off_when_it_was_off() -> None:
    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(collector._malloc_trim() is None, reason="not glibc")
def test_memory_freed_between_what_is_kept_is_given_back() -> None:
    # 48 MB in blocks of 4 KB (the C heap's, not Python's small-object arenas), one in 16
    # kept: glibc holds the holes between them until trimmed.
    blocks = [bytes(4096) for _ in range(12_000)]
    kept = blocks[::16]
    del blocks
    before = _rss_kb()
    collector.trim()
    after = _rss_kb()
    assert before - after > 20_000, (before, after)
    assert len(kept) == 750
