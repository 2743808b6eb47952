"""Local fine-tuning of the global model at one site, stopped early on the site's validation split.

Fine-tuning helps some federated tasks and hurts others (FLamby, Ogier du Terrail et
al. 2022: Fed-Heart 0.718 to 0.735, Camelyon16 0.619 to 0.549), and how long to train
is the whole question, so the site's validation loss decides: Lightning's EarlyStopping
stops after `patience` epochs without improvement, and `KeepBest` returns the weights of
the best epoch, the global model itself (epoch 0) included, so fine-tuning can never
deploy something worse on validation than what it started from.

`part: head` trains only the classifier head on the shared body: a personal head
(as in FedRep, Collins et al. 2021), here fitted after federated training rather than
alternating with it each round. `proximal_mu > 0` adds (mu/2)·||w - w_global||² to the
site's loss: a personal model regularised towards the global one, Ditto's personal
objective (Li et al., ICML 2021), here solved after training rather than beside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping

from federation.evaluation import predict
from federation.site import Site
from federation.state import StateDict, get_state, set_state

PARTS = ("all", "head")


@dataclass(frozen=True)
class FineTuneSettings:
    max_epochs: int = 20
    patience: int = 3
    part: str = "all"  # "head": only model.head trains
    proximal_mu: float = 0.0  # > 0: Ditto's pull towards the global weights


class KeepBest(L.Callback):
    """The lowest validation loss seen so far and the weights that reached it (in memory, no checkpoint files)."""

    def __init__(self, keys: list[str], start_loss: float, start_state: StateDict):
        self.keys, self.best, self.state, self.epochs = keys, start_loss, start_state, 0

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("val/loss")
        if value is not None and float(value) < self.best:
            self.best, self.state, self.epochs = float(value), get_state(module, self.keys), trainer.current_epoch + 1


def fine_tune(site: Site, module: L.LightningModule, global_state: StateDict, settings: FineTuneSettings, seed: int) -> tuple[StateDict, dict]:
    """(deployable state, record): the best epoch's weights on the site's validation loss, and how many epochs that was."""
    if settings.part not in PARTS:
        raise ValueError(f"adaptation fine-tuning part must be one of {PARTS}, got {settings.part!r}")
    start = site.personalise(global_state)
    keys = list(global_state)
    set_state(module, start)
    keep = KeepBest(keys, validation_loss(module, site), get_state(module, keys))
    frozen = _freeze_body(module) if settings.part == "head" else []
    L.seed_everything(seed, workers=True, verbose=False)
    module.set_class_counts(site.class_counts(module.model.n_classes))
    if settings.proximal_mu > 0:
        module.set_proximal(settings.proximal_mu, start)
    try:
        trainer = site.make_trainer(
            max_epochs=settings.max_epochs, max_steps=-1, limit_val_batches=1.0, check_val_every_n_epoch=1,
            callbacks=[EarlyStopping(monitor="val/loss", mode="min", patience=settings.patience), keep],
        )
        trainer.fit(module, train_dataloaders=site.loader("train", shuffle=True, seed=seed), val_dataloaders=site.loader("val"))
    finally:
        module.set_class_counts(None)
        module.set_proximal(0.0, None)
        for parameter in frozen:
            parameter.requires_grad_(True)
    set_state(module, global_state)
    return keep.state, {"epochs": keep.epochs, "val_loss": round(keep.best, 4)}


def validation_loss(module: L.LightningModule, site: Site) -> float:
    """Plain cross-entropy of the module's current model on the site's validation split."""
    logits, labels = predict(module.model, site.loader("val"))
    if not len(labels):
        return math.inf
    return float(torch.nn.functional.cross_entropy(logits, labels.long()))


def _freeze_body(module: L.LightningModule) -> list[torch.nn.Parameter]:
    head = {id(p) for p in module.model.head.parameters()}
    frozen = [p for p in module.parameters() if p.requires_grad and id(p) not in head]
    for parameter in frozen:
        parameter.requires_grad_(False)
    return frozen
