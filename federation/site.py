"""One site's part of a round: train the global model locally, return what changed.

The same code serves the in-process engine and, later, a deployed site: it sees
only its own data, receives a global state, and returns a ModelUpdate.
"""
from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader

from federation.state import StateDict, get_state, set_state
from federation.update import ModelUpdate
from modalities.site_data import SiteData
from models.multimodal import parameter_modality

LOCAL_OBJECTIVES = {"proximal_mu"}


class Site:
    def __init__(
        self,
        data: SiteData,
        collate: Callable,
        batch_size: int,
        make_trainer: Callable[..., L.Trainer],
    ):
        self.data = data
        self.name = data.name
        self.collate = collate
        self.batch_size = batch_size
        self.make_trainer = make_trainer

    @property
    def n_train(self) -> int:
        return len(self.data.splits["train"])

    def loader(self, split: str, shuffle: bool = False, seed: int = 0) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(self.data.splits[split], batch_size=self.batch_size, shuffle=shuffle, collate_fn=self.collate, generator=generator)

    def modality_counts(self, split: str = "train") -> dict[str, int]:
        """Training samples per modality: the weight of this site's update for that modality's parameters."""
        counts = {m: 0 for m in self.data.modalities}
        for item in self.data.splits[split]:
            for modality in item["inputs"]:
                counts[modality] = counts.get(modality, 0) + 1
        return counts

    def train(
        self, module: L.LightningModule, global_state: StateDict, limits: dict, round_: int, seed: int, objective: dict | None = None
    ) -> ModelUpdate:
        """Local training from the global state (`limits`: Trainer kwargs such as max_epochs or max_steps); the delta of what this site trained.

        `objective`: what the strategy adds to the local loss; `{"proximal_mu": mu}` (FedProx)
        adds (mu/2)·||w - w_global||² for the duration of this fit only.
        """
        objective = dict(objective or {})
        unknown = set(objective) - LOCAL_OBJECTIVES
        if unknown:
            raise ValueError(f"site {self.name!r}: unknown local objective {sorted(unknown)}; known: {sorted(LOCAL_OBJECTIVES)}")
        set_state(module, global_state)
        L.seed_everything(seed, workers=True, verbose=False)
        trainer = self.make_trainer(**limits)
        mu = float(objective.get("proximal_mu", 0.0))
        if mu > 0:
            module.set_proximal(mu, global_state)
        try:
            trainer.fit(module, train_dataloaders=self.loader("train", shuffle=True, seed=seed))
        finally:
            if mu > 0:
                module.set_proximal(0.0, None)
        local = get_state(module, list(global_state))
        counts = self._sample_counts(list(global_state), module.model.modalities)
        deltas = {k: local[k] - global_state[k] for k in counts}
        loss = trainer.callback_metrics.get("train/loss")
        metrics = {"train_loss": float(loss)} if loss is not None else {}
        return ModelUpdate(self.name, round_, deltas, counts, self.n_train, metrics)

    def _sample_counts(self, keys: list[str], model_modalities: list[str]) -> dict[str, int]:
        by_modality = self.modality_counts()
        counts = {}
        for key in keys:
            modality = parameter_modality(key, model_modalities)
            count = self.n_train if modality is None else by_modality.get(modality, 0)
            if count > 0:
                counts[key] = count
        return counts

