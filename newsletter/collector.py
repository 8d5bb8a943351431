"""Python's cycle collector, paused while a stage makes many objects that hold no cycles.

Collections are triggered by allocations and walk every object that survived earlier ones:
while a file of 20,000 subscribers becomes objects, or 100,000 digests are selected and
frozen, that is the same growing heap walked again and again, for nothing to collect.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


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
