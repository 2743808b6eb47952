"""What the performance benchmarks share: the project's config, a federation built from it, timing, tables.

The sites and the LightningModule are built from the composed Hydra config the
way federation/experiment.py builds them, so a benchmark measures the objects a
real run trains, not look-alikes.
"""
from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
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
    """The module and sites of `cfg`, built as federation.experiment._run_seed builds them."""
    import logging

    import lightning as L
    from hydra.utils import instantiate

    from federation.experiment import quiet_lightning
    from federation.site import Site
    from modalities.consortium import load_consortium
    from modalities.dataset import collate_batch
    from models.builder import build_model
    from models.lit_module import MultimodalLitModule

    quiet_lightning()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    consortium = load_consortium(cfg.data, seed=cfg.seed)
    L.seed_everything(cfg.seed, verbose=False)
    model = build_model(cfg.model, consortium.modalities, consortium.label_space.labels)
    optimizer = instantiate(cfg.federation.get("optimizer") or cfg.model.optimizer)
    loss = instantiate(cfg.model.loss) if cfg.model.get("loss") else None
    module = MultimodalLitModule(model, optimizer=optimizer, loss=loss, **cfg.model.get("training", {}))
    make_trainer = instantiate(cfg.trainer)
    collate = partial(collate_batch, modalities=model.modalities, readers=consortium.readers)
    sites = [Site(data, collate, cfg.data.batch_size, make_trainer) for data in consortium.sites]
    return Federation(cfg, module, sites)


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
