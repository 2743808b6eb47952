"""Post-hoc calibration per site: a temperature and a per-class logit bias fitted on the site's validation split.

A global model's decision threshold and class prior fit the consortium's mix, not one
site's: when a site's prevalence differs (label shift), its accuracy can fall below its
local-only model although its ranking (AUROC) is as good. Bias-corrected temperature
scaling (Alexandari, Kundaje & Shrikumar, ICML 2020; temperature scaling after Guo et
al., ICML 2017) refits only C + 1 numbers on validation logits, so it is the cheapest
adaptation and cannot overfit a small site by much. An L2 pull of the biases towards 0
keeps a site with a handful of validation patients close to the global model.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LogitAdjustment:
    """logits / temperature + bias."""

    temperature: float
    bias: torch.Tensor  # [C]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature + self.bias.to(logits.dtype)

    def as_record(self) -> dict:
        return {"temperature": round(self.temperature, 4), "bias": [round(float(b), 4) for b in self.bias]}


def fit_adjustment(logits: torch.Tensor, labels: torch.Tensor, l2: float = 0.01, steps: int = 100) -> LogitAdjustment:
    """Minimise validation NLL over log-temperature and biases (L-BFGS); l2 weighs the pull of the biases to 0."""
    if logits.ndim != 2 or len(logits) != len(labels) or not len(labels):
        raise ValueError(f"calibration needs [N, C] validation logits and N labels, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    logits, labels = logits.detach().float(), labels.detach().long()
    log_temperature = torch.zeros((), requires_grad=True)
    bias = torch.zeros(logits.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        adjusted = logits / log_temperature.exp() + bias
        loss = torch.nn.functional.cross_entropy(adjusted, labels) + l2 * (bias**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return LogitAdjustment(float(log_temperature.detach().exp().clamp(1e-2, 1e2)), bias.detach().clone())


def held_out_folds(n: int, folds: int) -> list[torch.Tensor]:
    """Cross-fitting's held-out index sets: a fixed (seed 0) shuffle of n patients cut into min(folds, n) parts;
    none below 2 parts. Every cross-fitted candidate uses the same folds, so their figures are comparable."""
    folds = min(folds, n)
    if folds < 2:
        return []
    return list(torch.from_numpy(np.random.default_rng(0).permutation(n)).tensor_split(folds))


def cross_fit(n: int, folds: int, fit_and_apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], whole: torch.Tensor) -> torch.Tensor:
    """Each patient's output from a fit on the other folds: `fit_and_apply(keep, held)` fits on the rows `keep`
    (a mask) and returns outputs for the rows `held`; `whole` (returned as it is below 2 folds) gives shape and dtype."""
    parts = held_out_folds(n, folds)
    out = whole.clone()
    for held in parts:
        keep = torch.ones(n, dtype=torch.bool)
        keep[held] = False
        out[held] = fit_and_apply(keep, held).to(out.dtype)
    return out


def cross_fitted(logits: torch.Tensor, labels: torch.Tensor, l2: float, folds: int) -> torch.Tensor:
    """Each validation patient's calibrated logits from an adjustment fitted on the other folds."""
    return cross_fit(len(labels), folds, lambda keep, held: fit_adjustment(logits[keep], labels[keep], l2=l2)(logits[held]), logits)
