"""A run's LightningModule and sites, built from config in one place.

Every runtime builds through here (the in-process run in experiment.py, the Flower
coordinator and each Flower site in flower/builder.py, the membership attack, the
benchmarks), so they all train the same objects: the same seed before
`build_model` gives the same initial weights, the same round optimizer and loss,
the same collate and batch size.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from federation.site import Site
from modalities.consortium import Consortium
from modalities.dataset import collate_batch
from models.builder import build_model
from models.lit_module import MultimodalLitModule


def build_module(cfg: DictConfig, modalities: Sequence[str], labels: Sequence[str], seed: int) -> MultimodalLitModule:
    """The global model as a LightningModule, seeded so that every runtime starts from the same weights."""
    L.seed_everything(seed, verbose=False)
    model = build_model(cfg.model, list(modalities), list(labels))
    # The sites' optimizer in the rounds may differ from the baselines' (FLamby: SGD for FedAvg, Adam otherwise).
    round_optimizer = instantiate(cfg.federation.get("optimizer") or cfg.model.optimizer)
    loss = instantiate(cfg.model.loss) if cfg.model.get("loss") else None
    return MultimodalLitModule(model, optimizer=round_optimizer, loss=loss, **cfg.model.get("training", {}))


def build_sites(cfg: DictConfig, consortium: Consortium, module: MultimodalLitModule, make_trainer: Callable | None = None) -> list[Site]:
    """One Site per site of `consortium`, batching for `module`'s modalities; `make_trainer`: the Trainer factory (from cfg.trainer)."""
    make_trainer = make_trainer or instantiate(cfg.trainer)
    collate = partial(collate_batch, modalities=module.model.modalities, readers=consortium.readers)
    return [Site(data, collate, cfg.data.batch_size, make_trainer) for data in consortium.sites]
