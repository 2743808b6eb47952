"""How many intra-op threads torch gets: a number, torch's default (null), or `auto`: the cores not already busy.

torch's default is one thread per core, and a loop of small kernels waits for its
slowest thread: on a 2-core machine beside one CPU-bound neighbour, rounds of the
default job take about twice as long with two threads as with one
(benchmarks/under_load.py). `auto` takes the cores this process may use, less the
one-minute load average (what else is running), and at least one: on a quiet machine
it is torch's default, on a busy one it steps aside. A fixed number keeps runs
bit-for-bit comparable across loads (the order of floating-point sums depends on it).
"""
from __future__ import annotations

import os

AUTO = "auto"


def resolve_threads(setting) -> int | None:
    """The thread count for `torch.set_num_threads`, or None to leave torch's default."""
    if setting is None:
        return None
    if setting == AUTO:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return max(1, min(cores, int(cores - busy + 0.5)))
    return int(setting)
