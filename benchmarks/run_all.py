"""Every performance figure of issue 9, measured side by side in one run on one machine: one markdown file.

    python benchmarks/run_all.py --quick     # small grids and short runs (minutes on a quiet 2-core machine)
    python benchmarks/run_all.py             # the full grids (about an hour on 2 cores)
    python benchmarks/run_all.py --only aggregation sweep --out /tmp/perf.md

Writes benchmarks/results/performance.md (unless --only is given without --out)
and prints it. Each section's figures are measured in this run, compared ones
interleaved; the header describes the machine. Sections 1 (simulation vs peers'
simulations, which needs the Flower deployment) and 6 (GPU) are placeholders
until those measurements exist: nothing there is estimated.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import perf_aggregation  # the benchmarks' folder is on sys.path: this file runs as a script from it
import perf_communication
import perf_machine
import perf_notes_cache
import perf_site_training
import perf_sweep
import torch
from perf_common import ROOT

OUT = ROOT / "benchmarks" / "results" / "performance.md"

PENDING_SIMULATION = """## 1. Simulation speed vs peers' simulations (pending)

Not measured yet. It compares rounds per second of our in-process engine with
Flower's simulation engine running the same site code and strategy, and needs the
Flower deployment (federation/flower/, in progress). When it lands, add a
perf_simulation.py beside the others and list it in run_all.ITEMS.
"""

PENDING_GPU = """## 6. GPU (pending)

Not measured here: this machine has no GPU. The lead runs the GPU figures
(`trainer=gpu`, benchmarks/gpu_check.sh); add them to this file with that
machine's description.
"""

THREADS = """
In-process sections run torch with `--threads` intra-op threads (1 by default). On a
small machine shared with other jobs, a 2-thread torch loop spends its time waiting
for whichever thread another job preempted: the same local round measured 3 s and
33 s of CPU time minutes apart here. With one thread, CPU time counts the work done
and hardly the neighbours, so the CPU-time columns compare like with like.
"""

ITEMS: dict[str, Callable[..., str]] = {
    "aggregation": perf_aggregation.run,
    "site_training": perf_site_training.run,
    "communication": perf_communication.run,
    "notes_cache": perf_notes_cache.run,
    "sweep": perf_sweep.run,
}
ORDER = ["simulation", "aggregation", "site_training", "communication", "notes_cache", "gpu", "sweep"]
PENDING = {"simulation": PENDING_SIMULATION, "gpu": PENDING_GPU}


def section(name: str, quick: bool) -> str:
    if name in PENDING:
        return PENDING[name]
    started = time.perf_counter()
    text = ITEMS[name](quick)
    print(f"[{name}: {time.perf_counter() - started:.0f} s]", file=sys.stderr, flush=True)
    return text + f"\n_{name}: {time.perf_counter() - started:.0f} s, load average after: {perf_machine.load_average()}_\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grids and short runs")
    parser.add_argument("--only", nargs="*", choices=list(ITEMS), help="measure only these sections")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the in-process sections (default 1, see THREADS)")
    parser.add_argument("--out", type=Path, help=f"markdown file to write (default {OUT.relative_to(ROOT)})")
    args = parser.parse_args()
    names = [n for n in ORDER if not args.only or n in args.only]
    torch.set_num_threads(args.threads)
    started = datetime.now(timezone.utc)
    header = (f"# Performance ({'quick' if args.quick else 'full'} run, {started:%Y-%m-%d %H:%M} UTC)\n\n"
              f"`python benchmarks/run_all.py{' --quick' if args.quick else ''}`\n\n" + perf_machine.describe())
    text = header + THREADS + "".join("\n" + section(name, args.quick) for name in names)
    out = args.out or (None if args.only else OUT)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
