"""Training losses for rare-disease class imbalance, chosen in config (`model/loss=<name>`).

A site's training set holds a few common diagnoses many times and most rare ones
once or never, so plain cross-entropy learns the common ones' prior. Each loss here
takes the training label counts of whoever is training (a site in a round, or the
pooled baseline) through `set_class_counts` before a fit; evaluation always uses
plain cross-entropy, so validation losses stay comparable across options.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CountAwareLoss(nn.Module):
    """Cross-entropy that may use the trainer's class counts (none of them needed here)."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("class_counts", torch.empty(0), persistent=False)

    def set_class_counts(self, counts: torch.Tensor | None) -> None:
        """Training samples per class (length = number of classes); None forgets them."""
        self.class_counts = torch.empty(0) if counts is None else torch.as_tensor(counts, dtype=torch.float32)

    def counts_for(self, logits: torch.Tensor) -> torch.Tensor:
        if self.class_counts.numel() != logits.shape[1]:
            raise ValueError(
                f"{type(self).__name__} needs the training class counts (one per class, {logits.shape[1]}); "
                f"got {self.class_counts.numel()}: call set_class_counts before training"
            )
        return self.class_counts.to(logits.device)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)


class ClassWeightedCrossEntropy(CountAwareLoss):
    """Cross-entropy weighted by inverse class frequency to the power `power` (1: balanced, 0.5: square root).

    Classes absent from the training set get weight 0 (no sample to weigh); weights
    are normalised so the mean over present classes is 1, keeping the loss scale.
    """

    def __init__(self, power: float = 1.0, label_smoothing: float = 0.0):
        super().__init__(label_smoothing)
        self.power = power

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        counts = self.counts_for(logits)
        present = counts > 0
        weights = torch.zeros_like(counts)
        weights[present] = counts[present].pow(-self.power)
        weights = weights / weights[present].mean()
        return F.cross_entropy(logits, labels, weight=weights, label_smoothing=self.label_smoothing)


class FocalLoss(CountAwareLoss):
    """Lin et al. 2017, "Focal Loss for Dense Object Detection" (ICCV): (1 - p_t)^gamma · CE.

    Down-weights the examples already classified well, which for a skewed label
    distribution are mostly the common diagnoses. Needs no class counts.
    """

    def __init__(self, gamma: float = 2.0, label_smoothing: float = 0.0):
        super().__init__(label_smoothing)
        if gamma < 0:
            raise ValueError(f"focal loss gamma must be >= 0, got {gamma}")
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, labels, reduction="none", label_smoothing=self.label_smoothing)
        p_true = torch.softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
        return ((1 - p_true).clamp(min=0).pow(self.gamma) * ce).mean()


class LogitAdjustedLoss(CountAwareLoss):
    """Menon et al. 2021, "Long-tail learning via logit adjustment" (ICLR): CE on logits + tau·log(prior).

    The model then learns the class-balanced scores and predicts with its logits as
    they are. The prior is the trainer's label distribution, smoothed by `epsilon`
    so classes it has never seen get a finite (very low) prior.
    """

    def __init__(self, tau: float = 1.0, epsilon: float = 1.0e-3, label_smoothing: float = 0.0):
        super().__init__(label_smoothing)
        self.tau, self.epsilon = tau, epsilon

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        counts = self.counts_for(logits)
        prior = (counts + self.epsilon) / (counts + self.epsilon).sum()
        adjusted = logits + self.tau * prior.log().to(logits.dtype)
        return F.cross_entropy(adjusted, labels, label_smoothing=self.label_smoothing)


def class_counts(labels, n_classes: int) -> torch.Tensor:
    """Samples per class among integer labels."""
    return torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=n_classes).float()
