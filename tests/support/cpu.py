"""CPU time of a piece of work, for tests that bound how it grows with its input."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


def cpu_seconds(run: Callable[[], object], times: int = 5) -> float:
    """The least CPU time of `times` runs, the garbage collector off: the work's own, not
    what else the machine (or the collector, walking every object the test made) did."""
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(times):
            started = time.process_time()
            run()
            best = min(best, time.process_time() - started)
    finally:
        gc.enable()
    return best
