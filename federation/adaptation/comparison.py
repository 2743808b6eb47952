"""Is a site better off? The paired difference of two models on the same test patients, with a bootstrap interval.

Test sets are small (Fed-Heart's Switzerland has 16 test patients), so one patient moves
accuracy by 6 points. Both models are scored on the same patients, so the difference is
resampled in pairs (scipy.stats.bootstrap, paired=True): "worse" means the whole 95%
interval lies below zero, not that one number is smaller.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import bootstrap


def correct(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per test patient: 1 if the top-scored class is the diagnosis (accuracy / top-1 per patient)."""
    return (logits.argmax(1) == labels.long()).numpy().astype(np.float64)


def paired_difference(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """mean(a - b) with its 95% percentile interval over patients resampled in pairs."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs the same patients, got {len(a)} and {len(b)}")
    mean = float(np.mean(a - b)) if len(a) else float("nan")
    if len(a) < 2 or np.all(a - b == (a - b)[0]):
        return {"mean": mean, "low": mean, "high": mean, "n": int(len(a))}
    result = bootstrap((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True, vectorized=True,
                       n_resamples=resamples, method="percentile", random_state=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return {"mean": mean, "low": float(low), "high": float(high), "n": int(len(a))}


def verdict(difference: dict[str, float]) -> str:
    if difference["high"] < 0:
        return "worse"
    if difference["low"] > 0:
        return "better"
    return "within noise"
