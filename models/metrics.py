"""Diagnostic metrics computed the same way for every model and site (torchmetrics functional).

Macro AUROC and AUPRC average over the classes that occur in the evaluated
labels only: at a small site most diseases have no test patient, and counting
them as 0 (torchmetrics' macro does) would measure the site's size, not the model.
"""
from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_average_precision,
    multiclass_calibration_error,
)

METRIC_NAMES: tuple[str, ...] = ("accuracy", "top3_accuracy", "top5_accuracy", "macro_auroc", "macro_auprc", "ece")


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Metrics for logits [N, C] against integer labels [N]; NaN where undefined (no samples)."""
    if labels.numel() == 0:
        return {name: float("nan") for name in METRIC_NAMES}
    n_classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1)
    labels = labels.long()
    return {
        "accuracy": float(multiclass_accuracy(probs, labels, n_classes, average="micro", top_k=1)),
        "top3_accuracy": float(multiclass_accuracy(probs, labels, n_classes, average="micro", top_k=min(3, n_classes))),
        "top5_accuracy": float(multiclass_accuracy(probs, labels, n_classes, average="micro", top_k=min(5, n_classes))),
        "macro_auroc": _macro_over_present(multiclass_auroc(probs, labels, n_classes, average=None), labels),
        "macro_auprc": _macro_over_present(multiclass_average_precision(probs, labels, n_classes, average=None), labels),
        "ece": float(multiclass_calibration_error(probs, labels, n_classes, n_bins=10, norm="l1")),
    }


def _macro_over_present(per_class: torch.Tensor, labels: torch.Tensor) -> float:
    present = torch.bincount(labels, minlength=per_class.numel()) > 0
    if int(present.sum()) < 2:  # one class only: no negatives, AUROC undefined
        return float("nan")
    return float(per_class[present].mean())
