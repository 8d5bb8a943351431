"""Python's cycle collector, paused while a stage makes many objects that hold no cycles;
and the memory a stage freed, given back.

Collections are triggered by allocations and walk every object that survived earlier ones:
while a file of 20,000 subscribers becomes objects, or 100,000 digests are selected and
frozen, that is the same growing heap walked again and again, for nothing to collect.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector off inside, back as it was after (on, unless someone turned it off)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (another C library)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def trim() -> None:
    """Give the memory freed inside the C heap back to the system (glibc keeps it, in holes
    between what is still used): after a stage whose many objects were only passing through
    (a file's 100,000 subscribers read, the roster made, the run frozen: ~17 MB of a send)."""
    release = _malloc_trim()
    if release is not None:
        release(0)
