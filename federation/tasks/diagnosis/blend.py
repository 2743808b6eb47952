"""A site's own blend of the federated scorer with the two training-free rankers, weighted on its validation publications.

The federated scorer is trained for the whole consortium's open differential; at a site
whose reports suit a ranker better (short reports, a case mix the likelihood ratios or the
Resnik best match already rank well), the closed top-1 can fall below that ranker's. Each
site may therefore deploy

    score(p, d) = z(federated)(p, d) + w_lr * z(likelihood ranker)(p, d) + w_sim * z(Resnik)(p, d)

with every score z-scored over the candidates per patient (so a weight means the same for
every patient and ranker), the weights chosen on a small grid on the site's validation
publications, ties to the smaller weights. This is a product of experts (Hinton 2002), the
site-level form of the ranker combination of Exomiser and LIRICAL, and it stays public:
the rankers use annotations only, and the weights are two numbers of the site's own.

Fitting weights on the validation patients that also judge them would flatter the blend
against the unfitted candidates, so its validation figure is cross-fitted: each fold's
patients are scored under weights chosen on the other folds (as the main job's calibration
and mixture, federation/adaptation/). The deployed weights are fitted on all of them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import numpy as np

GRID = (0.0, 0.25, 0.5, 1.0)   # each ranker's weight relative to the federated scorer's 1
RANKERS = ("likelihood", "resnik")


@dataclass(frozen=True)
class Blend:
    weights: tuple[float, float]   # (w_lr, w_sim)

    def __call__(self, federated: np.ndarray, likelihood: np.ndarray, resnik: np.ndarray) -> np.ndarray:
        return z_scores(federated) + self.weights[0] * z_scores(likelihood) + self.weights[1] * z_scores(resnik)

    def as_record(self) -> dict:
        return dict(zip(("likelihood_weight", "resnik_weight"), self.weights))


def z_scores(scores: np.ndarray) -> np.ndarray:
    """Each patient's scores over the candidates as z-scores (a constant row stays 0)."""
    scores = np.asarray(scores, dtype=np.float64)
    spread = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


Objective = Callable[[np.ndarray, np.ndarray], float]   # (scores, labels) -> higher is better


def fit(scores: tuple[np.ndarray, np.ndarray, np.ndarray], labels: np.ndarray, objective: Objective) -> Blend:
    """The grid weights best on these patients; ties to the smaller total weight (the federated scorer first)."""
    grid = sorted(product(GRID, GRID), key=sum)
    values = [objective(Blend(w)(*scores), labels) for w in grid]
    return Blend(grid[int(np.argmax(values))])


def cross_fitted(scores: tuple[np.ndarray, np.ndarray, np.ndarray], labels: np.ndarray, objective: Objective, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Every patient's blended scores under weights fitted on the other folds (what the site's choice sees)."""
    n = len(labels)
    out = np.zeros(scores[0].shape, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(n)
    parts = [p for p in np.array_split(order, min(folds, n)) if len(p)]
    for part in parts:
        rest = np.setdiff1d(order, part)
        blend = fit(tuple(s[rest] for s in scores), labels[rest], objective) if len(rest) else Blend((0.0, 0.0))
        out[part] = blend(*(s[part] for s in scores))
    return out
