"""Item 1: wall time of R rounds x N sites, the in-process engine vs Flower's simulation runtime, same model, data and seed.

    python benchmarks/perf_simulation.py            # N = 10 and 50 (conf/benchmarks/simulation.yaml)
    python benchmarks/perf_simulation.py --quick    # N = 10 only
    python benchmarks/run_all.py --only simulation --out /tmp/perf.md

Both runtimes run flower_rounds.py's measurements of the same task: the in-process
engine (one process) and rarefed's ServerApp/ClientApp on Flower's simulation
runtime (virtual SuperNodes on Ray, Flower's default client resources), with the
same site-training and strategy code. The task is FLamby's Fed-Heart-Disease
(logistic regression, FedAvg) with its four centres cut into N sites
(`data.shards`, modalities/shards.py). "Whole run" is wall time from the start to
the final metrics: for the in-process engine composing the config, loading the
data, building the model, the rounds and the final test; for Flower, `flwr run` to
the finished run folder (SuperLink and Ray start-up included). "Per round" is the
rounds alone (training and validation), as each runtime timed them.
"""
from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from perf_common import ROOT, markdown_table

CONFIG = ROOT / "conf" / "benchmarks" / "simulation.yaml"


@dataclass
class Measured:
    whole: float
    """Wall seconds of the whole run."""
    per_round: float
    accuracy: float
    """Final test accuracy, mean over sites."""


@dataclass
class Row:
    sites: int
    in_process: Measured
    flower: Measured | None
    note: str = ""
    """Why Flower's column is empty, if it is."""


def settings() -> DictConfig:
    return OmegaConf.load(CONFIG)


def overrides(cfg: DictConfig, sites: int, data_root: Path) -> list[str]:
    """The Hydra overrides of one measurement, the same in both runtimes."""
    return [*cfg.overrides, f"data.root={data_root.resolve()}", f"seed={cfg.seed}", f"federation.rounds={cfg.rounds}",
            f"+data.shards={sites}"]


def measure(cfg: DictConfig, sites: int) -> Row:
    import flower_rounds  # the Flower machinery is imported only when measured

    chosen = overrides(cfg, sites, flower_rounds.HEART)
    started = time.perf_counter()
    ours = flower_rounds.in_process(chosen)
    in_process = Measured(time.perf_counter() - started, ours["per_round"], ours["accuracy"])
    if not flower_rounds._simulation_installed():
        return Row(sites, in_process, None, "not measured: `flwr[simulation]` (Ray) is not installed")
    try:
        with tempfile.TemporaryDirectory(prefix="perf_simulation_") as work:
            theirs = flower_rounds.simulation(chosen, Path(work), sites)
    except (RuntimeError, TimeoutError) as err:
        return Row(sites, in_process, None, f"failed: {err}")
    flower = Measured(theirs["total"], theirs["per_round"], theirs["accuracy"])
    return Row(sites, in_process, flower, "" if math.isfinite(flower.accuracy) else "no final accuracy: its sites' replies failed")


def agree(a: float, b: float, tolerance: float) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tolerance


def table(rows: Sequence[Row], cfg: DictConfig) -> str:
    """One line per N, both runtimes side by side, and the verdict on the target."""
    header = ["sites", "in-process whole run s", "Flower simulation whole run s", "speed-up, whole run",
              "in-process s per round", "Flower simulation s per round", "speed-up per round",
              "final accuracy in-process", "final accuracy Flower", f"agree (within {cfg.accuracy_tolerance})"]
    lines = []
    for row in rows:
        ours, theirs = row.in_process, row.flower
        if theirs is None:
            lines.append([row.sites, f"{ours.whole:.1f}", row.note, "—", f"{ours.per_round:.2f}", "—", "—", f"{ours.accuracy:.3f}", "—", "—"])
            continue
        same = agree(ours.accuracy, theirs.accuracy, float(cfg.accuracy_tolerance))
        lines.append([row.sites, f"{ours.whole:.1f}", f"{theirs.whole:.1f}", f"{theirs.whole / ours.whole:.1f}x",
                      f"{ours.per_round:.2f}", f"{theirs.per_round:.2f}", f"{theirs.per_round / ours.per_round:.1f}x",
                      f"{ours.accuracy:.3f}", f"{theirs.accuracy:.3f}", "yes" if same else "**no**"])
    problems = [f"- {row.sites} sites: Flower {row.note}" for row in rows if row.flower is not None and row.note]
    return markdown_table(header, lines) + "\n" + "".join(p + "\n" for p in problems) + ("\n" if problems else "") + verdict(rows, cfg) + "\n"


def verdict(rows: Sequence[Row], cfg: DictConfig) -> str:
    goal = (f"Target: the in-process engine at least {cfg.target.speedup}x faster than Flower's simulation runtime "
            f"at {cfg.target.sites} sites (whole run), with the same accuracy")
    row = next((r for r in rows if r.sites == cfg.target.sites), None)
    if row is None or row.flower is None:
        return f"{goal}: not measured{f' ({row.note})' if row else ''}."
    speedup = row.flower.whole / row.in_process.whole
    same = agree(row.in_process.accuracy, row.flower.accuracy, float(cfg.accuracy_tolerance))
    met = speedup >= float(cfg.target.speedup) and same
    return (f"{goal}: **{'met' if met else 'not met'}** ({speedup:.1f}x whole run, "
            f"{row.flower.per_round / row.in_process.per_round:.1f}x per round; accuracy "
            f"{'the same' if same else 'differs'} within {cfg.accuracy_tolerance}).")


def run(quick: bool) -> str:
    cfg = settings()
    rows = [measure(cfg, int(n)) for n in (cfg.quick_sites if quick else cfg.sites)]
    note = (f"Fed-Heart-Disease (FLamby's protocol: logistic regression, FedAvg, 100 local SGD steps of batch 4 per round), "
            f"its four centres cut into N sites (`data.shards`), {cfg.rounds} rounds, seed {cfg.seed}; one run of each runtime "
            "per N, in-process first. The same ServerApp/ClientApp site-training and strategy code in both "
            "(benchmarks/flower_rounds.py). Whole run: start to final metrics (Flower: `flwr run` to the finished run "
            "folder, SuperLink and Ray start-up included); per round: the rounds alone, as each runtime timed them. "
            "Final accuracy: test accuracy of the final global model, mean over the N sites. Flower's ClientApp composes "
            "the config, loads its site's data and builds the model for every message (as a deployed site does); Ray "
            "runs virtual clients with Flower's default resources (2 CPUs each, so one at a time on 2 cores). "
            f"Settings: {CONFIG.relative_to(ROOT)}.")
    return f"## {cfg.title}\n\n{note}\n\n{table(rows, cfg)}"


if __name__ == "__main__":
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the quick grid of sites")
    torch.set_num_threads(1)
    print(run(parser.parse_args().quick))
