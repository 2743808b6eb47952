"""Ranks of the true diagnosis, the reported metrics, and a paired bootstrap for per-site comparisons.

Closed set: the label diseases only. Open set: every candidate (every annotated
disease plus the labels). Ties count against the true disease (a flat score ranks
nothing first). A site's gain is judged against noise by a paired bootstrap over its
test patients: resample patients with replacement, recompute the difference of the
two approaches' metric on the same resample, and report the 2.5-97.5 percentiles.
"""
from __future__ import annotations

import numpy as np

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
    """(mean difference a - b, 2.5 and 97.5 percentiles) over resampled patients."""
    if not len(a):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), size=(resamples, len(a)))
    diffs = (a[picks] - b[picks]).mean(1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float((a - b).mean()), float(low), float(high)
