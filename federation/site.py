"""One site's part of a round: train the global model locally, return what changed.

The same code serves the in-process engine and a deployed site (Flower): it sees
only its own data, receives a global state and the strategy's local objective,
and returns a ModelUpdate. What a strategy asks a site to keep between rounds
lives here too: FedBN's normalisation layers and SCAFFOLD's control variate.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import lightning as L
import torch
from torch.utils.data import DataLoader

from federation.privacy.dp_sgd import dp_fit
from federation.privacy.egress import check_egress, serialise_update
from federation.state import StateDict, get_state, normalisation_keys, set_state
from federation.update import ModelUpdate
from modalities.site_data import SiteData
from models.losses import class_counts
from models.multimodal import parameter_modality

SEED_STRIDE = 1000


def training_seed(base: int, round_: int, site_index: int) -> int:
    """A site's training seed for a round, one rule for both runtimes (the in-process transport and the deployed
    plan), so that a deployment trains bit for bit as the in-process engine does."""
    return base + SEED_STRIDE * round_ + site_index


LOCAL_OBJECTIVES = {"proximal_mu", "scaffold_control", "keep_local"}
KEEP_LOCAL = {"normalisation": normalisation_keys}


@dataclass
class LocalFit:
    """What one local fit reports: its task loss, the optimizer steps taken and the step size (SCAFFOLD needs both)."""

    train_loss: float | None
    steps: int
    lr: float
    privacy: dict[str, float] = field(default_factory=dict)


@dataclass
class SitePrivacy:
    """DP-SGD at this site: its calibrated settings and its own budget (federation/privacy/)."""

    config: dict
    budget: object


class Site:
    def __init__(
        self,
        data: SiteData,
        collate: Callable,
        batch_size: int,
        make_trainer: Callable[..., L.Trainer],
        privacy: SitePrivacy | None = None,
    ):
        self.data = data
        self.privacy = privacy
        self.name = data.name
        self.collate = collate
        self.batch_size = batch_size
        self.make_trainer = make_trainer
        self.kept_local: StateDict = {}
        """FedBN: this site's own values of the keys it never sends (its normalisation layers)."""
        self.control: StateDict = {}
        """SCAFFOLD: this site's control variate c_i, per parameter it trained (zero until then)."""

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

    def class_counts(self, n_classes: int, split: str = "train") -> torch.Tensor:
        """Training samples per diagnosis, for the imbalance losses (aggregate counts; they never leave the site)."""
        data = self.data.splits[split]
        labels = data.labels if hasattr(data, "labels") else [item["label"] for item in data]
        return class_counts(labels, n_classes)

    def personalise(self, global_state: StateDict) -> StateDict:
        """The global state as this site runs it: with its own kept-local values (FedBN) laid over."""
        return {**global_state, **{k: v for k, v in self.kept_local.items() if k in global_state}}

    def train(
        self, module: L.LightningModule, global_state: StateDict, limits: dict, round_: int, seed: int, objective: dict | None = None
    ) -> ModelUpdate:
        """Local training from the global state (`limits`: Trainer kwargs such as max_epochs or max_steps); the delta of what this site trained.

        `objective`: what the strategy asks of local training (Strategy.local_objective):
        `proximal_mu` (FedProx) adds (mu/2)·||w - w_global||²; `scaffold_control`
        (SCAFFOLD, the server's control variate) corrects each gradient by c - c_i;
        `keep_local: normalisation` (FedBN) keeps the normalisation layers here.
        """
        objective = self._check_objective(objective)
        local_keys = self._local_keys(module, objective, global_state)
        start = self.personalise(global_state)
        fit = self.fit(module, start, limits, seed, objective)
        local = get_state(module, list(global_state))
        self.kept_local = {k: local[k] for k in local_keys}
        counts = self._sample_counts([k for k in global_state if k not in local_keys], module.model.modalities)
        deltas = {k: local[k] - global_state[k] for k in counts}
        controls = self._update_control(objective, start, local, counts, fit, module) if "scaffold_control" in objective else {}
        metrics = ({"train_loss": fit.train_loss} if fit.train_loss is not None else {}) | fit.privacy
        update = ModelUpdate(self.name, round_, deltas, counts, self.n_train, metrics, controls)
        # the site's own egress guard: only known parameter arrays, counts and metrics leave
        check_egress(serialise_update(update), {k: tuple(v.shape) for k, v in global_state.items()})
        return update

    def fine_tune(self, module: L.LightningModule, global_state: StateDict, limits: dict, seed: int) -> StateDict:
        """Personalisation: the global model (as this site runs it) trained a little more on this site's data alone."""
        self.fit(module, self.personalise(global_state), limits, seed, {}, private=False)
        return get_state(module, list(global_state))

    def fit(self, module, start: StateDict, limits: dict, seed: int, objective: dict, private: bool = True) -> LocalFit:
        """One local fit from `start`, the objective's extra terms set for its duration only.

        DP-SGD when the site is private and the result will leave it (`private`); models
        that stay at the site (local-only baseline, personalisation) train plainly.
        """
        set_state(module, start)
        L.seed_everything(seed, workers=True, verbose=False)
        module.set_class_counts(self.class_counts(module.model.n_classes))
        try:
            if self.privacy is not None and private:
                return self._private_fit(module, limits, seed, objective)
            return self._plain_fit(module, start, limits, seed, objective)
        finally:
            module.set_class_counts(None)

    def _plain_fit(self, module, start: StateDict, limits: dict, seed: int, objective: dict) -> LocalFit:
        trainer = self.make_trainer(**limits)
        mu = float(objective.get("proximal_mu", 0.0))
        if mu > 0:
            module.set_proximal(mu, start)
        if "scaffold_control" in objective:
            self._check_sgd(module)
            module.set_correction(self._correction(module, objective["scaffold_control"]))
        try:
            trainer.fit(module, train_dataloaders=self.loader("train", shuffle=True, seed=seed))
        finally:
            module.set_proximal(0.0, None)
            module.set_correction(None)
        loss = module.epoch_train_loss
        lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else 0.0
        return LocalFit(None if loss is None else float(loss), int(trainer.global_step), lr)

    def _private_fit(self, module, limits: dict, seed: int, objective: dict) -> LocalFit:
        """DP-SGD through Opacus (federation/privacy/dp_sgd.py); raises BudgetExhausted before training past the budget."""
        if objective.get("proximal_mu") or "scaffold_control" in objective:
            raise ValueError(f"site {self.name!r}: DP-SGD trains plain local SGD; the strategy's {sorted(objective)} is not supported with it")
        spent = dp_fit(module, self.loader("train", shuffle=True, seed=seed), limits, self.privacy.config, self.privacy.budget, seed=seed)
        return LocalFit(spent.train_loss, 0, 0.0, {"epsilon": spent.epsilon, "delta": spent.delta})

    def _check_objective(self, objective: dict | None) -> dict:
        objective = dict(objective or {})
        unknown = set(objective) - LOCAL_OBJECTIVES
        if unknown:
            raise ValueError(f"site {self.name!r}: unknown local objective {sorted(unknown)}; known: {sorted(LOCAL_OBJECTIVES)}")
        keep = objective.get("keep_local")
        if keep is not None and keep not in KEEP_LOCAL:
            raise ValueError(f"site {self.name!r}: cannot keep {keep!r} local; known: {sorted(KEEP_LOCAL)}")
        return objective

    def _check_sgd(self, module) -> None:
        """SCAFFOLD's control update (x - y_i) / (K lr) estimates the mean gradient only if each local step is lr x gradient.

        With Adam the step is not, the controls come out wrong by orders of magnitude and
        training diverges (top-1 0.095 on the synthetic consortium): refuse, and say what to set.
        """
        factory = module.optimizer_factory
        optimizer = getattr(factory, "func", factory)
        if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.SGD)):
            raise ValueError(
                f"site {self.name!r}: SCAFFOLD needs plain SGD local steps, the round optimizer is "
                f"{getattr(optimizer, '__name__', optimizer)}; set federation.optimizer to torch.optim.SGD "
                "(conf/federation/scaffold.yaml does)"
            )

    def _local_keys(self, module, objective: dict, global_state: StateDict) -> set[str]:
        keep = objective.get("keep_local")
        return (KEEP_LOCAL[keep](module) & set(global_state)) if keep else set()

    def _correction(self, module, server_control: StateDict) -> StateDict:
        """c - c_i for the parameters this site trains (its modalities' encoders, fusion, head)."""
        trained = self._sample_counts([n for n, p in module.named_parameters() if p.requires_grad], module.model.modalities)
        return {k: server_control.get(k, 0) - self.control.get(k, 0) for k in trained if k in server_control or k in self.control}

    def _update_control(self, objective, start: StateDict, local: StateDict, counts: dict, fit: LocalFit, module) -> StateDict:
        """SCAFFOLD option II: c_i+ = c_i - c + (x - y_i) / (K·lr); returns c_i+ - c_i and keeps c_i+."""
        server = objective["scaffold_control"]
        steps, lr = fit.steps, fit.lr
        if steps == 0 or lr <= 0:
            return {}
        params = {n for n, p in module.named_parameters() if p.requires_grad}
        deltas = {}
        for key in (k for k in counts if k in params):
            old = self.control.get(key, torch.zeros_like(start[key]))
            new = old - server.get(key, torch.zeros_like(old)) + (start[key] - local[key]) / (steps * lr)
            deltas[key] = new - old
            self.control[key] = new
        return deltas

    def _sample_counts(self, keys: list[str], model_modalities: list[str]) -> dict[str, int]:
        by_modality = self.modality_counts()
        counts = {}
        for key in keys:
            modality = parameter_modality(key, model_modalities)
            count = self.n_train if modality is None else by_modality.get(modality, 0)
            if count > 0:
                counts[key] = count
        return counts
