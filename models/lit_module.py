"""The one LightningModule: wraps any MultimodalClassifier for local training and evaluation."""
from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from models.losses import CountAwareLoss
from models.metrics import classification_metrics


class MultimodalLitModule(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        label_smoothing: float = 0.0,
        modality_dropout: float = 0.0,
        loss: nn.Module | None = None,
    ):
        """`optimizer` is a partial (Hydra `_partial_: true`) completed with the trainable parameters.

        `loss`: the training loss (models/losses.py; class-weighted, focal or logit-adjusted
        for imbalance); plain cross-entropy with `label_smoothing` when None.

        `modality_dropout` hides each present modality of a training sample with this
        probability (never the last one). Without it the fusion leans on whichever
        modality is learnt first (phenotypes) and ignores slower ones, which then
        fail the patients and sites that lack that modality.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "loss"])
        self.model = model
        self.optimizer_factory = optimizer
        self.loss = loss if loss is not None else CountAwareLoss(label_smoothing)
        self.eval_loss = nn.CrossEntropyLoss()
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"val": [], "test": []}
        # FedProx: set by a site for one local fit, cleared after (see set_proximal).
        self.proximal_mu = 0.0
        self.proximal_reference: dict[str, torch.Tensor] | None = None
        # SCAFFOLD: the control-variate correction (c - c_i), likewise set for one fit (see set_correction).
        self.correction: dict[str, torch.Tensor] | None = None
        # The current epoch's task loss, summed over patients (see epoch_train_loss).
        self._loss_sum: torch.Tensor | float = 0.0
        self._loss_count = 0

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(batch["inputs"], batch["present"])

    def model_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss (the training loss while training, plain cross-entropy otherwise) and logits."""
        logits = self(batch)
        loss_fn = self.loss if self.training else self.eval_loss
        return loss_fn(logits, batch["label"]), logits

    def set_class_counts(self, counts: torch.Tensor | None) -> None:
        """The training label counts of whoever trains next (imbalance losses use them; see models/losses.py)."""
        if hasattr(self.loss, "set_class_counts"):
            self.loss.set_class_counts(counts)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.hparams.modality_dropout > 0:
            batch = {**batch, "present": drop_modalities(batch["present"], self.hparams.modality_dropout)}
        loss, _ = self.model_step(batch)
        n = len(batch["label"])
        # train/loss stays the task loss, comparable across strategies; the proximal term is logged apart.
        self._loss_sum, self._loss_count = self._loss_sum + loss.detach() * n, self._loss_count + n
        logged = self.logger is not None  # Lightning's self.log costs ~1 ms a step: a third of a small site's round
        if logged:
            self.log("train/loss", loss, batch_size=n, on_step=False, on_epoch=True)
        if self.proximal_reference is not None:
            proximal = self.proximal_term()
            if logged:
                self.log("train/proximal", proximal, batch_size=n, on_step=False, on_epoch=True)
            loss = loss + proximal
        if self.correction is not None:
            # d/dw <w, c - c_i> = c - c_i: SGD on this loss takes SCAFFOLD's corrected step
            loss = loss + self.correction_term()
        return loss

    def set_correction(self, correction: dict[str, torch.Tensor] | None) -> None:
        """Add <w, correction> over the named trainable parameters to the training loss; `None` clears it.

        SCAFFOLD (Karimireddy et al. 2020) corrects each local gradient by c - c_i,
        the server's control variate minus the site's; a linear term with that
        coefficient adds exactly this to the gradient (with SGD, the paper's step;
        an adaptive optimizer rescales the corrected gradient as it does any other).
        """
        if correction is None:
            self.correction = None
            return
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        unknown = set(correction) - set(params)
        if unknown:
            raise ValueError(f"correction names parameters the model does not train: {sorted(unknown)[:5]}")
        self.correction = {name: c.detach().to(params[name].device, params[name].dtype, copy=True) for name, c in correction.items()}

    def correction_term(self) -> torch.Tensor:
        params = dict(self.named_parameters())
        return sum((params[name] * c.to(params[name].device)).sum() for name, c in self.correction.items())

    def set_proximal(self, mu: float, reference: dict[str, torch.Tensor] | None) -> None:
        """Add (mu/2)·||w - reference||² over the trainable parameters to the training loss; `None` clears it.

        `reference` is keyed like this module's state dict (the global state a site
        receives); only trainable parameters are pulled towards it, not buffers.
        """
        if reference is None:
            self.proximal_mu, self.proximal_reference = 0.0, None
            return
        params = {name: p for name, p in self.named_parameters() if p.requires_grad and name in reference}
        if not params:
            raise ValueError("proximal reference shares no trainable parameter with the model")
        self.proximal_mu = float(mu)
        self.proximal_reference = {name: reference[name].detach().to(p.device, p.dtype, copy=True) for name, p in params.items()}

    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._loss_count = 0.0, 0

    @property
    def epoch_train_loss(self) -> float | None:
        """The last training epoch's task loss, mean over its patients (None before any step)."""
        return float(self._loss_sum / self._loss_count) if self._loss_count else None

    def on_train_start(self) -> None:
        # the Trainer has moved the model by now; move the reference once rather than every step
        if self.proximal_reference is not None:
            self.proximal_reference = {k: v.to(self.device) for k, v in self.proximal_reference.items()}
        if self.correction is not None:
            self.correction = {k: v.to(self.device) for k, v in self.correction.items()}

    def proximal_term(self) -> torch.Tensor:
        params = dict(self.named_parameters())
        squared = sum(((params[name] - ref.to(params[name].device)) ** 2).sum() for name, ref in self.proximal_reference.items())
        return 0.5 * self.proximal_mu * squared

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._collect("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._collect("test", batch)

    def on_validation_epoch_end(self) -> None:
        self._log_stage("val")

    def on_test_epoch_end(self) -> None:
        self._log_stage("test")

    def _collect(self, stage: str, batch: dict) -> None:
        loss, logits = self.model_step(batch)
        self.log(f"{stage}/loss", loss, batch_size=len(batch["label"]))
        self._outputs[stage].append((logits.detach().cpu(), batch["label"].cpu()))

    def _log_stage(self, stage: str) -> None:
        if not self._outputs[stage]:
            return
        logits, labels = (torch.cat(parts) for parts in zip(*self._outputs[stage]))
        self._outputs[stage].clear()
        for name, value in classification_metrics(logits, labels).items():
            self.log(f"{stage}/{name}", value)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])


def drop_modalities(present: torch.Tensor, rate: float) -> torch.Tensor:
    """Randomly hide present modalities per sample, keeping at least one for every sample that had one."""
    keep = present & (torch.rand(present.shape, device=present.device) >= rate)
    emptied = keep.sum(1) == 0
    if emptied.any():
        # restore one random originally-present modality in rows that lost all of them
        scores = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0)
        restore = torch.zeros_like(present).scatter_(1, scores.argmax(1, keepdim=True), True) & present
        keep = torch.where(emptied.unsqueeze(1), restore, keep)
    return keep
