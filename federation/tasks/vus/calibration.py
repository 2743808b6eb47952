"""Calibrated probability of pathogenicity, with a bootstrap interval, for the federated variant model.

A trained model's scores rank variants but are not probabilities a clinician can
use: the model's training share of pathogenic variants (about half in ClinVar
sets) is not the prior of a new missense variant, and neural nets are over- or
under-confident. So:

1. fit a monotone map from the model's logit to P(pathogenic) on held-out genes
   (Platt scaling, Platt 1999; or isotonic regression, Zadrozny & Elkan 2002;
   both scikit-learn), never on rows the model trained on;
2. turn it into a likelihood ratio by dividing out the calibration rows' own
   odds, and apply the prior of the population being scored (Pejaver et al. 2022,
   AJHG 109:2163, use 0.0441 for rare missense variants):
   posterior odds = LR * prior / (1 - prior);
3. refit on bootstrap resamples of the calibration rows for an interval: how much
   the posterior would move with another draw of held-out variants.

Everything is stored as JSON numbers (`calibration.json` in the run folder): no
pickled objects, so a run can be scored by a later version of the code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from modalities.base import DataError, check_option

METHODS = ("platt", "isotonic")
EPS = 1e-6  # probabilities are kept inside [EPS, 1 - EPS] so odds stay finite


@dataclass
class Calibrator:
    """One fitted map logit -> P(pathogenic) at the calibration rows' prior (`data_prior`)."""

    method: str
    params: dict[str, list[float]]
    data_prior: float

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray, method: str) -> "Calibrator":
        check_option("calibration method", method, METHODS)
        logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
        prior = float(np.clip(labels.mean(), EPS, 1 - EPS))
        if method == "platt":
            fitted = LogisticRegression(C=1e6).fit(logits[:, None], labels)  # practically unpenalised
            return cls(method, {"a": [float(fitted.coef_[0, 0])], "b": [float(fitted.intercept_[0])]}, prior)
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(logits, labels)
        return cls(method, {"x": fitted.X_thresholds_.tolist(), "y": fitted.y_thresholds_.tolist()}, prior)

    def probability(self, logits: np.ndarray) -> np.ndarray:
        """P(pathogenic | logit) at the calibration rows' prior."""
        logits = np.asarray(logits, dtype=np.float64)
        if self.method == "platt":
            p = 1.0 / (1.0 + np.exp(-(self.params["a"][0] * logits + self.params["b"][0])))
        else:
            p = np.interp(logits, self.params["x"], self.params["y"])
        return np.clip(p, EPS, 1 - EPS)

    def likelihood_ratio(self, logits: np.ndarray) -> np.ndarray:
        """P(logit | pathogenic) / P(logit | benign): the calibrated odds over the calibration rows' prior odds."""
        return odds(self.probability(logits)) / odds(self.data_prior)


@dataclass
class VariantCalibration:
    """The calibrator fitted on all calibration rows, and its bootstrap refits for the interval."""

    point: Calibrator
    bootstrap: list[Calibrator]
    n: int

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray, method: str = "platt", n_bootstrap: int = 200, seed: int = 0) -> "VariantCalibration":
        labels = np.asarray(labels)
        if len(labels) < 10 or len(set(labels.tolist())) < 2:
            raise ValueError(f"calibration needs held-out rows of both classes; got {len(labels)} rows, classes {sorted(set(labels.tolist()))}")
        rng = np.random.default_rng(seed)
        refits = []
        for _ in range(int(n_bootstrap)):
            rows = rng.integers(0, len(labels), len(labels))
            if len(set(labels[rows].tolist())) == 2:
                refits.append(Calibrator.fit(np.asarray(logits)[rows], labels[rows], method))
        return cls(Calibrator.fit(logits, labels, method), refits, int(len(labels)))

    def posterior(self, logits: np.ndarray, prior: float, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(posterior, low, high) at `prior`: the point fit and the bootstrap percentile interval of `level`."""
        point = posterior_from_lr(self.point.likelihood_ratio(logits), prior)
        if not self.bootstrap:
            return point, point, point
        draws = np.stack([posterior_from_lr(c.likelihood_ratio(logits), prior) for c in self.bootstrap])
        tail = (1.0 - level) / 2 * 100
        low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
        return point, np.minimum(low, point), np.maximum(high, point)

    def to_json(self) -> str:
        payload = {"n": self.n, "point": _as_dict(self.point), "bootstrap": [_as_dict(c) for c in self.bootstrap]}
        return json.dumps(payload)

    @classmethod
    def load(cls, path: str | Path) -> "VariantCalibration":
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "no calibration here: is this the run folder of `experiment=vus`?")
        data = json.loads(path.read_text())
        return cls(Calibrator(**data["point"]), [Calibrator(**c) for c in data["bootstrap"]], int(data["n"]))


def odds(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return p / (1.0 - p)


def posterior_from_lr(likelihood_ratio: np.ndarray, prior: float) -> np.ndarray:
    """Bayes' rule in odds form: posterior odds = LR * prior odds."""
    posterior_odds = np.asarray(likelihood_ratio) * odds(prior)
    return posterior_odds / (1.0 + posterior_odds)


def _as_dict(c: Calibrator) -> dict:
    return {"method": c.method, "params": c.params, "data_prior": c.data_prior}
