"""What the performance benchmarks share: the project's config, a federation built from it, timing, tables.

The sites and the LightningModule are built from the composed Hydra config the
way federation/driver/experiment.py builds them, so a benchmark measures the objects a
real run trains, not look-alikes.
"""
from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SMOKE_DATA = ROOT / ".cache" / "benchmarks" / "data"
"""The tiny consortium goes here, not to data/ where it would replace the default consortium of the same seed."""
SMOKE = ("experiment=smoke", f"paths.data_dir={SMOKE_DATA}", "progress=false")
DEFAULT = ("progress=false",)


def config(overrides: Sequence[str]):
    """The composed `train` config (heavy imports stay inside: the memory subprocesses never load Lightning)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@dataclass
class Federation:
    cfg: Any
    module: Any
    """A MultimodalLitModule."""
    sites: list
    """federation.site.Site, one per site of the consortium."""


def build_federation(cfg) -> Federation:
    """The module and sites of `cfg`, built as federation.driver.experiment._run_seed builds them (federation/build.py)."""
    import logging

    from federation.build import build_module, build_sites
    from federation.training_env import quiet_lightning
    from modalities.consortium import load_consortium

    quiet_lightning()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    consortium = load_consortium(cfg.data, seed=cfg.seed)
    module = build_module(cfg, consortium.modalities, consortium.label_space.labels, cfg.seed)
    return Federation(cfg, module, build_sites(cfg, consortium, module))


@dataclass
class Timing:
    wall: float
    """Median wall-clock seconds."""
    cpu: float
    """Median CPU seconds of this process (all its threads): less sensitive to other users' load than wall time."""


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, Timing]:
    """Median seconds of each callable, run in turn (a, b, c, a, b, c, ...) so load on a shared machine hits all alike."""
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
    return {name: Timing(statistics.median(wall[name]), statistics.median(cpu[name])) for name in runs}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.1f} MiB"
