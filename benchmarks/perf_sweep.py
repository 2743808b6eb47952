"""Item 7: a multirun's wall time with the joblib launcher (jobs in parallel) vs Hydra's basic launcher (one by one).

Each runs the same sweep of `scripts/train.py -m experiment=smoke` over every
combination of a few small overrides, as one command from start to end (Python
start-up, imports and Hydra included), in the order basic, basic with one torch
thread, parallel (then the reverse order when repeated). The summaries are then collected into one
table with scripts/collect_sweep.py. On a machine with C cores the speed-up can
be at most about C, and a change in other users' load between the two sweeps moves it
either way: the CPU seconds show whether both sweeps did the same work. Hydra's basic
launcher runs torch with its default threads (one per core); joblib's loky workers get
cores // workers threads each.
"""
from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perf_common import ROOT, SMOKE, config, markdown_table

SWEEP_FULL = ["model/fusion=mean,gated", "model.embed_dim=8,16", "model.optimizer.lr=0.003,0.01", "federation=fedavg,fedprox"]
SWEEP_QUICK = ["model/fusion=mean,gated", "model.embed_dim=8,16"]
QUICK_BUDGET = ["baselines.local=false", "baselines.pooled=false"]


VARIANTS = {
    "basic": ("basic", {}),
    "basic, 1 thread": ("basic", {"OMP_NUM_THREADS": "1"}),
    "parallel": ("parallel", {}),
}
"""Row -> (launcher config, extra environment). `basic, 1 thread` isolates what the launcher's parallelism buys
from what one torch thread per process saves on a loaded machine (parallel's workers run one thread each)."""


def run_sweep(variant: str, sweep: list[str], extra: list[str], out: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds of the sweep's processes (the command and its workers, once reaped)."""
    launcher, env = VARIANTS[variant]
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", *SMOKE, *extra, *sweep,
           f"hydra/launcher={launcher}", f"hydra.sweep.dir={out}", f"paths.output_dir={out.parent}"]
    started, before = time.perf_counter(), _children_cpu()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
    return time.perf_counter() - started, _children_cpu() - before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def prepare_data() -> None:
    """The tiny consortium is generated before timing, so neither sweep pays for it."""
    from modalities.consortium import prepare_data as generate

    cfg = config(SMOKE)
    generate(cfg.data, cfg.seed)


def run(quick: bool) -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    from collect_sweep import sweep_table

    prepare_data()
    sweep, extra = (SWEEP_QUICK, QUICK_BUDGET) if quick else (SWEEP_FULL, [])
    order = list(VARIANTS) if quick else [*VARIANTS, *reversed(VARIANTS)]
    n_jobs = 1
    for values in sweep:
        n_jobs *= len(values.split("=", 1)[1].split(","))
    seconds, cpu = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for i, variant in enumerate(order):
            out = Path(tmp) / f"{i}_{variant.replace(' ', '_').replace(',', '')}"
            wall, used = run_sweep(variant, sweep, extra, out)
            seconds[variant].append(wall)
            cpu[variant].append(used)
            done = len(list(out.rglob("summary.json")))
            if done != n_jobs:
                raise RuntimeError(f"{variant} sweep finished {done} of {n_jobs} jobs; see {out}")
        table = sweep_table(Path(tmp) / f"{order.index('parallel')}_parallel", metrics=["accuracy", "macro_auroc"])
    wall = {v: statistics.median(seconds[v]) for v in VARIANTS}
    label = {"basic": "basic (sequential, torch default threads)", "basic, 1 thread": "basic (sequential, OMP_NUM_THREADS=1)",
             "parallel": f"parallel (joblib, {os.cpu_count()} workers)"}
    rows = [[label[v], n_jobs, f"{wall[v]:.0f}", f"{wall[v] / n_jobs:.1f}", f"{statistics.median(cpu[v]):.0f}",
             f"{wall['basic'] / wall[v]:.2f}x", f"{wall['basic, 1 thread'] / wall[v]:.2f}x"] for v in VARIANTS]
    header = ["launcher", "jobs", "wall s (median)", "wall s per job", "CPU s, all processes (median)",
              "speed-up vs basic", "speed-up vs basic, 1 thread"]
    overrides = " ".join(["experiment=smoke", *extra, *sweep])
    return ("## 7. Sweeps: joblib launcher vs basic launcher\n\n" + __doc__.split("\n\n", 1)[1].strip()
            + f"\n\nSweep: `python scripts/train.py -m {overrides}` ({n_jobs} jobs), "
            f"{len(seconds['basic'])} run(s) per launcher.\n\n" + markdown_table(header, rows)
            + "\nThe parallel sweep's summaries, collected by `scripts/collect_sweep.py <sweep dir>`:\n\n" + table)


if __name__ == "__main__":
    print(run(quick=True))
