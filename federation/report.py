"""The run's summary: per-site metrics of the local-only, federated and pooled models, as JSON and a table."""
from __future__ import annotations

import math

import torch

from models.metrics import METRIC_NAMES, classification_metrics

APPROACHES = ("local", "federated", "pooled")
TABLE_METRICS = ("accuracy", "top3_accuracy", "macro_auroc")


def build_summary(task: str, predictions: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]], n_train: dict[str, int]) -> dict:
    """predictions[approach][site] = (logits, labels) on that site's test split."""
    sites = {}
    for site in n_train:
        entry = {"n_train": n_train[site], "n_test": int(predictions["federated"][site][1].numel())}
        for approach, per_site in predictions.items():
            entry[approach] = classification_metrics(*per_site[site])
        sites[site] = entry
    overall = {}
    for approach, per_site in predictions.items():
        logits = torch.cat([per_site[s][0] for s in n_train])
        labels = torch.cat([per_site[s][1] for s in n_train])
        overall[approach] = classification_metrics(logits, labels)
    return {"task": task, "metric_names": list(METRIC_NAMES), "sites": sites, "overall": overall}


def markdown_table(summary: dict, metrics: tuple[str, ...] = TABLE_METRICS) -> str:
    approaches = [a for a in APPROACHES if a in summary["overall"]]
    header = ["site", "n_train", "n_test"] + [f"{m} {a}" for m in metrics for a in approaches]
    rows = [header, ["---"] * len(header)]
    for site, entry in summary["sites"].items():
        rows.append([site, str(entry["n_train"]), str(entry["n_test"])] + [_fmt(entry[a][m]) for m in metrics for a in approaches])
    overall = summary["overall"]
    n_train = sum(e["n_train"] for e in summary["sites"].values())
    n_test = sum(e["n_test"] for e in summary["sites"].values())
    rows.append(["**all sites**", str(n_train), str(n_test)] + [_fmt(overall[a][m]) for m in metrics for a in approaches])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows) + "\n"


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
