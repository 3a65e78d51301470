"""Timing shared by the benchmarks (imported as ``_timing``: each script runs from bench/)."""

import gc
import time
from collections.abc import Callable
from typing import Any


def per_call(fn: Callable[[], Any], inner: int) -> float:
    """Mean seconds per call over ``inner`` calls, with the garbage collector off (as timeit does)."""
    gc.collect()
    gc.disable()
    try:
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t) / inner
    finally:
        gc.enable()
