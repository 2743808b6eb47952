"""How many intra-op threads torch gets: a number, torch's default (null), or `auto`: the cores not already busy.

torch's default is one thread per core, and a loop of small kernels waits for its
slowest thread: on a 2-core machine beside one CPU-bound neighbour, rounds of the
default job take about twice as long with two threads as with one
(benchmarks/under_load.py). `auto` takes the cores this process may use, less the
cores other work keeps busy right now (psutil's CPU use over a quarter second, while
this process waits), and at least one: on a quiet machine it is torch's default, on
a busy one it steps aside. (The load average reacts too slowly: a neighbour started a
minute ago shows as half a core.) Measured on 2 cores, 4 rounds of the default job
(benchmarks/results/under_load.md): quiet, null 28 s, 1 thread 35 s, auto 29 s; beside
one CPU-bound neighbour, 60 s, 36 s and 36 s. So auto is the default. A fixed number keeps runs
bit-for-bit comparable across loads (the order of floating-point sums depends on it).

`auto` also keeps to an explicit OpenMP limit (OMP_NUM_THREADS). The parallel launcher
(hydra/launcher=parallel, joblib's loky workers) sets it to cores // jobs in every worker;
jobs that start together all see an idle machine, and without the limit each took every
core, so a sweep in parallel ran slower than one job after another.
"""
from __future__ import annotations

import os

import psutil

AUTO = "auto"


def resolve_threads(setting) -> int | None:
    """The thread count for `torch.set_num_threads`, or None to leave torch's default."""
    if setting is None:
        return None
    if setting == AUTO:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        busy = psutil.cpu_percent(interval=0.25) / 100.0 * (psutil.cpu_count() or cores)
        return max(1, min(cores, openmp_limit() or cores, int(cores - busy + 0.5)))
    return int(setting)


def openmp_limit() -> int | None:
    """OMP_NUM_THREADS when it is a positive whole number (launchers and schedulers set it), else None."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None
