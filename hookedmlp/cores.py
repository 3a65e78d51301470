"""How many intra-op threads to run with: the cores this process may use that are actually free.

torch starts one intra-op thread per core. On a shared machine (a laptop, a CI runner, a
machine beside a test run) a core is often busy with another process, and then torch's
threads wait on each other at every parallel op: with one busy neighbour on 2 cores, a grid ran
1.9x slower at 2 threads than at 1 (``bench/bench_busy.py``). ``free_cores`` measures the idle
share of each core this process may run on over a short window (Linux: ``/proc/stat``; else the
load average), and ``pick_threads("auto")`` takes that many threads, at least one, at most the
cores the process is allowed (its affinity and its cgroup's CPU quota).

Threads change the last bits of results (BLAS and torch split sums by thread), never what is
printed: training fixes its own count (``TrainSettings.threads``) for that reason.
"""

import math
import os
import time
from typing import Any

from hookedmlp.errors import ConfigError

__all__ = ["free_cores", "allowed_cores", "pick_threads", "AUTO"]

AUTO = "auto"
CPU_MAX = "/sys/fs/cgroup/cpu.max"  # cgroup v2: "<quota> <period>" in microseconds, or "max <period>"
PROC_STAT = "/proc/stat"
_SLACK = 0.25  # a core counts as free when at least 75% of it idled in the window


def allowed_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (``cpu.max``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        with open(CPU_MAX) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _cpu_times() -> dict[str, tuple[int, int]]:
    """Per core (``cpu0``...): (idle ticks, total ticks) since boot, from ``/proc/stat``."""
    out = {}
    with open(PROC_STAT) as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                out[name] = (ticks[3] + ticks[4], sum(ticks))
    return out


def free_cores(window: float = 0.1) -> float:
    """The idle cores, summed over those this process may run on, measured over ``window`` seconds."""
    try:
        mine = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        before = _cpu_times()
        time.sleep(window)
        after = _cpu_times()
    except (OSError, AttributeError, ValueError):  # no /proc/stat: the load average, less what it counts
        return max(0.0, allowed_cores() - os.getloadavg()[0])
    free = 0.0
    for core in mine & before.keys() & after.keys():
        idle, total = (a - b for a, b in zip(after[core], before[core]))
        free += idle / total if total > 0 else 1.0
    return free


def pick_threads(spec: Any = AUTO) -> int:
    """``spec`` itself for a count, or for ``"auto"`` the free cores (at least 1, at most ``allowed_cores()``).

    Examples:
        >>> pick_threads(3)
        3
        >>> 1 <= pick_threads("auto") <= allowed_cores()
        True
    """
    if spec == AUTO:
        return max(1, min(allowed_cores(), math.floor(free_cores() + _SLACK)))
    if isinstance(spec, bool) or not isinstance(spec, int) or spec < 1:
        raise ConfigError(f"threads must be a positive int or 'auto', got {spec!r}")
    return spec
