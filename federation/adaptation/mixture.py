"""A per-site mixture of the global model and the site's local-only model, its weight fitted on the site's validation split.

    p(y | x) = alpha * softmax(calibrated global logits) + (1 - alpha) * softmax(local-only logits),  alpha in [0, 1]

This is the post-hoc, inference-time form of APFL's global/local interpolation (Deng,
Kamani & Mahdavi, "Adaptive Personalized Federated Learning", 2020), not APFL itself:
APFL trains each site's personal model and its mixing weight alpha jointly with the
federation, round by round, and interpolates the models' weights. Here both models are
already trained (the global one by the federation, the local-only one by the site
alone, `baselines.local`) and only alpha is fitted, after training, on the site's
validation patients. Method `mixture` in `adaptation.methods`, candidate `mixture`.

Probabilities, not logits or weights. The two models were trained apart, on different
data, so their logit scales are not comparable: a local-only model fitted on a few dozen
patients is often far more confident than the global one, and in an average of logits
its scale, not alpha, would decide. A mixture of the two predictive distributions (a
linear opinion pool) is a probability for every alpha, and a confidently wrong component
costs at most -log(alpha * p_global) on a patient: under label skew the local-only model
may never have seen a class, and then gives it almost no probability. Weights cannot be
averaged here at all: APFL's interpolated models are trained together, these are not
(for a linear model such as heart's logistic regression, averaging weights would equal
averaging logits). The log loss of the pool is convex in alpha, so the grid below finds
its minimum to within the grid's step.

The global model calibrated. Against a site's patients the global model's known fault
is its class prior and threshold (the consortium's mix, not the site's); bias-corrected
temperature scaling (calibration.py, the `calibrated` candidate's adjustment, same l2)
fixes that with C + 1 numbers, so alpha weighs what the global model knows against what
the local-only one knows, instead of paying for a prior that calibration repairs more
cheaply. The local-only model is mixed as it is: trained on the site's own patients, its
prior is the site's already, and its overconfidence is what the pool tempers. The
mixture calibrates the global model itself, whether or not `calibrate` is configured, so
`mixture` means the same thing in every configuration; it is not calibrated again on top
(no `mixture+calibrated`): one more candidate on 6-34 validation patients costs more in
the choice's noise than a second calibration could repair. Alpha is fitted on the
calibrated global model's out-of-fold validation logits (what it will be on new
patients), not on logits calibrated on the very patients alpha is fitted on.

Scored out of fold. The candidate's validation predictions, which the choice sees, come
from mixtures (calibration and alpha) fitted on the other folds, the same folds as every
calibrated candidate's; the deployed mixture is refitted on the whole validation split.
Ties in alpha go to the global model (the grid runs from 1 down to 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from federation.adaptation.calibration import LogitAdjustment, cross_fit, cross_fitted, fit_adjustment, held_out_folds

STEPS = 100  # alpha on a grid of 1/STEPS: far finer than a few dozen validation patients can tell apart
GRID = torch.linspace(1.0, 0.0, STEPS + 1, dtype=torch.float64)  # from the global model down: ties keep it


def mix(global_logits: torch.Tensor, local_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """log(alpha * softmax(global) + (1 - alpha) * softmax(local)): log-probabilities, usable as logits."""
    a = torch.tensor(float(alpha), dtype=torch.float64)
    mixed = torch.logaddexp(a.log() + torch.log_softmax(global_logits.double(), 1), torch.log1p(-a) + torch.log_softmax(local_logits.double(), 1))
    return mixed.float()


def fit_alpha(global_logits: torch.Tensor, local_logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The grid's alpha with the lowest mean log loss of the pool on these patients (1, the global model, with none)."""
    if not len(labels):
        return 1.0
    rows, labels = torch.arange(len(labels)), labels.long()
    true_global = torch.log_softmax(global_logits.double(), 1)[rows, labels]
    true_local = torch.log_softmax(local_logits.double(), 1)[rows, labels]
    loss = -torch.logaddexp(GRID.log()[:, None] + true_global, torch.log1p(-GRID)[:, None] + true_local).mean(1)  # [grid]
    best = int(torch.nonzero(loss <= loss.min() + 1e-9)[0])  # the first (nearest the global model) of the minima, up to rounding
    return round(float(GRID[best]), 6)


@dataclass(frozen=True)
class Mixture:
    alpha: float
    adjustment: LogitAdjustment  # the global model's calibration at the site

    def __call__(self, global_logits: torch.Tensor, local_logits: torch.Tensor) -> torch.Tensor:
        return mix(self.adjustment(global_logits), local_logits, self.alpha)

    def as_record(self) -> dict:
        return {"alpha": self.alpha, "global": "calibrated", **self.adjustment.as_record()}


def fit_mixture(global_logits: torch.Tensor, local_logits: torch.Tensor, labels: torch.Tensor, l2: float, folds: int) -> Mixture:
    """The global model's calibration on these patients, and alpha on its out-of-fold calibrated logits."""
    adjustment = fit_adjustment(global_logits, labels, l2=l2)
    calibrated = cross_fitted(global_logits, labels, l2, folds) if len(held_out_folds(len(labels), folds)) else adjustment(global_logits)
    return Mixture(fit_alpha(calibrated, local_logits, labels), adjustment)


def cross_fitted_mixture(global_logits: torch.Tensor, local_logits: torch.Tensor, labels: torch.Tensor, l2: float, folds: int) -> tuple[torch.Tensor, list[float]]:
    """Each validation patient's mixture from one fitted on the other folds (what the choice sees), and each fold's alpha."""
    alphas = []

    def fit_and_apply(keep: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
        mixture = fit_mixture(global_logits[keep], local_logits[keep], labels[keep], l2, folds)
        alphas.append(mixture.alpha)
        return mixture(global_logits[held], local_logits[held])

    n = len(labels)
    if not held_out_folds(n, folds):  # one patient: nothing to hold out
        return fit_mixture(global_logits, local_logits, labels, l2, folds)(global_logits, local_logits), alphas
    return cross_fit(n, folds, fit_and_apply, torch.empty(global_logits.shape)), alphas
