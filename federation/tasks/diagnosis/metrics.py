"""Ranks of the true diagnosis, the reported metrics, and a paired bootstrap for per-site comparisons.

Closed set: the label diseases only. Open set: every candidate (every annotated
disease plus the labels). Ties count against the true disease (a flat score ranks
nothing first). A site's gain is judged against noise by the main job's paired
bootstrap over its test patients (federation/adaptation/comparison.py: patients
resampled in pairs, the 2.5-97.5 percentiles of the difference).
"""
from __future__ import annotations

import numpy as np

from federation.adaptation.comparison import paired_difference

METRICS = ("top1", "top5", "top10", "open_top1", "open_top10", "mrr", "open_mrr")
COMPARED = ("top1", "open_top1", "open_top10")


def ranks(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """0-based rank of column `truth[i]` in row i; ties count against it."""
    true = scores[np.arange(len(scores)), truth]
    return (scores >= true[:, None]).sum(1) - 1


def patient_hits(closed: np.ndarray, open_: np.ndarray) -> dict[str, np.ndarray]:
    """Per patient, each metric's value (0/1 hits, reciprocal ranks): means of these are the metrics."""
    return {
        "top1": (closed < 1).astype(float),
        "top5": (closed < 5).astype(float),
        "top10": (closed < 10).astype(float),
        "open_top1": (open_ < 1).astype(float),
        "open_top10": (open_ < 10).astype(float),
        "mrr": 1.0 / (closed + 1.0),
        "open_mrr": 1.0 / (open_ + 1.0),
    }


def summarise(hits: dict[str, np.ndarray]) -> dict[str, float]:
    return {m: float(v.mean()) if len(v) else float("nan") for m, v in hits.items()}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean difference a - b, 2.5 and 97.5 percentiles) over patients resampled in pairs."""
    difference = paired_difference(np.asarray(a, float), np.asarray(b, float), resamples, seed)
    return difference["mean"], difference["low"], difference["high"]
