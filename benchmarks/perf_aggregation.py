"""Item 2: FedAvg aggregation throughput against the machine's memory bandwidth, and the aggregator's peak memory.

Throughput: GB/s of site updates read (N updates x P float32 parameters, in keys of
at most 1M parameters like a network's layers), for
- `weighted_mean_per_key` (federation/aggregate.py, what FedAvg, FedOpt and SCAFFOLD call),
  with its float32 sums (the default) and float64 sums,
- the copying float64 mean FedAvg used before (kept here as `copying_fp64_mean`), for comparison,
- the bound: an axpy (`sum += w * update`, torch, float32) over the same updates, i.e. the
  least work any aggregation that reads every update once can do,
measured interleaved, median of repeats. The updates cycle through a pool of distinct
tensors of about 1 GiB (at most N), far larger than the caches.

Peak memory: each point runs in a fresh subprocess; updates come from a generator that
makes each one on the fly (FedAvg) or are all held (coordinate median needs every
update at once). Peak = VmHWM (the kernel's resident high-water mark, reset through
/proc/self/clear_refs just before aggregating) minus the RSS before (psutil): it sees
torch's allocations, which tracemalloc does not.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from perf_common import ROOT, markdown_table, mib

from federation.aggregate import weighted_mean_per_key
from federation.robust import coordinate_median

KEY_SIZE = 1_000_000
POOL_BYTES = 2**30
TARGET_BANDWIDTH_SHARE, TARGET_PEAK_MODELS = 0.5, 3.0
Update = tuple[dict[str, torch.Tensor], dict[str, float]]


def key_sizes(n_params: int) -> dict[str, int]:
    sizes = [KEY_SIZE] * (n_params // KEY_SIZE) + ([n_params % KEY_SIZE] if n_params % KEY_SIZE else [])
    return {f"layer{i:03d}.weight": size for i, size in enumerate(sizes)}


def make_update(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {key: torch.randn(size, generator=g).mul_(1e-3) for key, size in sizes.items()}


def make_constant_update(sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
    """Cheap to make (the memory runs make N of them on the fly): every page written, so resident."""
    return {key: torch.full((size,), 1e-3 * seed) for key, size in sizes.items()}


def weights(sizes: dict[str, int], site: int) -> dict[str, float]:
    return {key: float(10 + site) for key in sizes}


def stream(pool: list[dict[str, torch.Tensor]], n_sites: int, sizes: dict[str, int]) -> Iterator[Update]:
    return ((pool[i % len(pool)], weights(sizes, i)) for i in range(n_sites))


def axpy_bound(updates: Iterator[Update]) -> None:
    sums = None
    for deltas, w in updates:
        if sums is None:
            sums = {key: torch.zeros_like(delta) for key, delta in deltas.items()}
        for key, delta in deltas.items():
            sums[key].add_(delta, alpha=w[key])


def copying_fp64_mean(updates: Iterator[Update]) -> dict[str, torch.Tensor]:
    """FedAvg's mean as first written (until 2026-11): each delta cast to float64 and a fresh sum per update.

    Kept here only as the comparison row: about four times the memory traffic of
    one pass, plus the page faults of fresh memory.
    """
    sums: dict[str, torch.Tensor] = {}
    totals: dict[str, float] = {}
    for deltas, w in updates:
        for key, delta in deltas.items():
            contribution = delta.double() * float(w[key])
            sums[key] = sums[key] + contribution if key in sums else contribution
            totals[key] = totals.get(key, 0.0) + float(w[key])
    return {key: (total / totals[key]).float() for key, total in sums.items()}


AGGREGATORS: dict[str, Callable[[Iterator[Update]], object]] = {
    "copying fp64 (earlier)": copying_fp64_mean,
    "FedAvg fp32": weighted_mean_per_key,
    "FedAvg fp64": lambda updates: weighted_mean_per_key(updates, accumulate=torch.float64),
    "axpy bound": axpy_bound,
}


def throughput_point(n_sites: int, n_params: int, repeats: int) -> dict[str, float]:
    """GB/s of updates read, per aggregator (median of interleaved repeats)."""
    sizes = key_sizes(n_params)
    model_bytes = 4 * n_params
    pool = [make_update(sizes, seed) for seed in range(min(n_sites, max(2, math.ceil(POOL_BYTES / model_bytes))))]
    seconds = {name: [] for name in AGGREGATORS}
    for _ in range(repeats):
        for name, aggregate in AGGREGATORS.items():
            started = time.perf_counter()
            aggregate(stream(pool, n_sites, sizes))
            seconds[name].append(time.perf_counter() - started)
    return {name: n_sites * model_bytes / statistics.median(values) / 1e9 for name, values in seconds.items()}


def throughput_table(grid: list[tuple[int, int]]) -> tuple[str, list[bool]]:
    rows, met = [], []
    for n_sites, n_params in grid:
        repeats = 3 if n_sites * n_params * 4 <= 4e9 else 1
        rate = throughput_point(n_sites, n_params, repeats)
        bound = rate["axpy bound"]
        met.append(rate["FedAvg fp32"] >= TARGET_BANDWIDTH_SHARE * bound)
        rows.append([n_sites, f"{n_params / 1e6:g}M", mib(4 * n_params), repeats]
                    + [f"{rate[name]:.2f} ({100 * rate[name] / bound:.0f}%)" for name in AGGREGATORS if name != "axpy bound"]
                    + [f"{bound:.2f}"])
    header = ["sites N", "parameters", "one update", "repeats", *[f"{name} GB/s (% of bound)" for name in AGGREGATORS if name != "axpy bound"],
              "axpy bound GB/s"]
    return markdown_table(header, rows), met


# --- peak memory, one fresh subprocess per point ---

def _peak_rss_since_reset() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _generated(sizes: dict[str, int], n_sites: int) -> Iterator[Update]:
    return ((make_constant_update(sizes, seed=i), weights(sizes, i)) for i in range(n_sites))


def _median_per_key(updates: list[Update]) -> dict[str, torch.Tensor]:
    return {key: coordinate_median([deltas[key] for deltas, _ in updates]) for key in updates[0][0]}


def memory_point(aggregator: str, n_sites: int, n_params: int) -> dict:
    """Runs in the subprocess: the peak resident memory the aggregation adds, in bytes."""
    import psutil

    sizes = key_sizes(n_params)
    run_aggregator(aggregator, key_sizes(1000), 2)  # warm-up: torch's one-time set-up is not the aggregator's
    before = psutil.Process().memory_info().rss
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    run_aggregator(aggregator, sizes, n_sites)
    return {"peak_bytes": _peak_rss_since_reset() - before, "model_bytes": 4 * n_params}


def run_aggregator(aggregator: str, sizes: dict[str, int], n_sites: int) -> None:
    if aggregator == "median":
        _median_per_key(list(_generated(sizes, n_sites)))  # every update held at once, as the robust rules need
    elif aggregator == "copying fp64 (earlier)":
        copying_fp64_mean(_generated(sizes, n_sites))
    else:
        weighted_mean_per_key(_generated(sizes, n_sites))


# glibc keeps freed blocks (up to a trim threshold that grows with the largest block freed) and serves
# mid-size tensors from its heap: the resident size then counts memory the aggregator no longer holds,
# by an amount that varied 8-20 MiB between identical runs here. These settings make glibc give freed
# memory back at once (and mmap blocks of 64 KiB and up), so the peak counts what the aggregator holds.
HONEST_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def measure_memory(aggregator: str, n_sites: int, n_params: int) -> dict:
    cmd = [sys.executable, str(Path(__file__)), "memory", aggregator, str(n_sites), str(n_params)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=os.environ | HONEST_MALLOC)
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_footprint(n_sites: int, n_params: int) -> int:
    """coordinate_median's working set: the updates (4 B), their float64 stack (8 B), sorted values (8 B) and indices (8 B)."""
    return 28 * n_sites * n_params


def memory_table(fedavg_grid: list[tuple[int, int]], median_grid: list[tuple[int, int]], budget: float) -> tuple[str, list[bool]]:
    rows, met = [], []
    points = [(a, n, p) for n, p in fedavg_grid for a in ("copying fp64 (earlier)", "FedAvg fp32")] + [("median", n, p) for n, p in median_grid]
    for aggregator, n_sites, n_params in points:
        holds = "all N (needs them at once)" if aggregator == "median" else "one at a time (generator)"
        if aggregator == "median" and median_footprint(n_sites, n_params) > budget:
            rows.append([aggregator, n_sites, f"{n_params / 1e6:g}M", holds, f"skipped: needs ~{median_footprint(n_sites, n_params) / 2**30:.0f} GiB", "", ""])
            continue
        result = measure_memory(aggregator, n_sites, n_params)
        models = result["peak_bytes"] / result["model_bytes"]
        if aggregator == "FedAvg fp32":
            met.append(models <= TARGET_PEAK_MODELS)
        rows.append([aggregator, n_sites, f"{n_params / 1e6:g}M", holds, mib(result["peak_bytes"]), f"{models:.2f}",
                     "target <= 3" if aggregator != "median" else "n/a"])
    header = ["aggregator", "sites N", "parameters", "updates held", "peak RSS added", "x one model", "target"]
    return markdown_table(header, rows), met


def run(quick: bool) -> str:
    sizes = (1_000_000, 4_000_000) if quick else (1_000_000, 10_000_000, 50_000_000)
    sites = (10, 100) if quick else (10, 50, 100)
    throughput, bandwidth_met = throughput_table([(n, p) for p in sizes for n in sites])
    fedavg_memory = [(n, p) for p in sizes for n in sites]
    median_memory = [(n, 1_000_000) for n in sites] + [(10, sizes[-1])]
    memory, peak_met = memory_table(fedavg_memory, median_memory, budget=(4 if quick else 10) * 2**30)
    verdict = (f"Targets: FedAvg fp32 at >= 50% of the axpy bound: {'met' if all(bandwidth_met) else 'not met'} "
               f"({sum(bandwidth_met)}/{len(bandwidth_met)} points); FedAvg peak <= 3x one model: "
               f"{'met' if all(peak_met) else 'not met'} ({sum(peak_met)}/{len(peak_met)} points). "
               "The memory subprocesses run with glibc told to return freed memory at once "
               "(MALLOC_TRIM_THRESHOLD_=0, MALLOC_MMAP_THRESHOLD_=65536): otherwise the resident size also counts "
               "blocks the allocator keeps after torch frees them, 8-20 MiB here, which weighs most on the smallest model.")
    return ("## 2. Aggregation: throughput and peak memory\n\n" + __doc__.split("\n\n", 1)[1].strip() + "\n\n"
            + f"Throughput with {torch.get_num_threads()} torch thread(s).\n\n" + throughput + "\n" + memory + "\n" + verdict + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description="one memory point (used by run_all in a fresh subprocess)")
    parser.add_argument("mode", choices=["memory"])
    parser.add_argument("aggregator", choices=["copying fp64 (earlier)", "FedAvg fp32", "median"])
    parser.add_argument("n_sites", type=int)
    parser.add_argument("n_params", type=int)
    args = parser.parse_args()
    print(json.dumps(memory_point(args.aggregator, args.n_sites, args.n_params)))


if __name__ == "__main__":
    main()
