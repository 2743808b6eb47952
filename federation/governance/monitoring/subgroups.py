"""Is any patient group served worse? Validation metrics by sex, age band and ancestry, pooled over sites.

Attributes come from each validation patient's `meta` (the phenopacket's sex and
age; ancestry only where a loader provides it, since Phenopacket v2 has no field
for it). A group with fewer than `min_count` patients is shown as "<k" without
metrics (with `suppress_small`'s secondary suppression), because an accuracy over
two patients tells the consortium whether those two were diagnosed.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchmetrics.functional.classification import multiclass_accuracy

from federation.round_record import RoundRecord
from modalities.quality import suppress_small

ATTRIBUTES = ("sex", "age_band", "ancestry")
METRICS = {"accuracy": 1, "top3_accuracy": 3}  # name: k of top-k accuracy (as models.metrics defines them)
UNKNOWN_SEX = {"UNKNOWN_SEX", "", None}


def age_band(age_years: float | None, bounds: Sequence[float]) -> str | None:
    """'0-17', '18-64', '65+' for bounds [0, 18, 65]; None when the age is unknown or below the first bound."""
    if age_years is None:
        return None
    bounds = sorted(bounds)
    for lower, upper in zip(bounds, list(bounds[1:]) + [None]):
        if upper is None:
            return f"{lower:g}+" if age_years >= lower else None
        if lower <= age_years < upper:
            return f"{lower:g}-{upper - 1:g}"
    return None


def group_of(meta: Mapping[str, Any], attribute: str, bounds: Sequence[float]) -> str | None:
    if attribute == "sex":
        sex = meta.get("sex")
        return None if sex in UNKNOWN_SEX else str(sex)
    if attribute == "age_band":
        return age_band(meta.get("age_years"), bounds)
    value = meta.get(attribute)
    return None if value in (None, "") else str(value)


def subgroup_metrics(
    logits: torch.Tensor, labels: torch.Tensor, metas: Sequence[Mapping[str, Any]], bounds: Sequence[float], min_count: int
) -> dict[str, dict[str, dict[str, Any]]]:
    """{attribute: {group: {"n": n or "<k", metric: value or None}}} for the attributes some patient has."""
    if len(metas) != len(labels):
        raise ValueError(f"{len(metas)} patients' attributes for {len(labels)} predictions")
    out = {}
    for attribute in ATTRIBUTES:
        rows: dict[str, list[int]] = defaultdict(list)
        for i, meta in enumerate(metas):
            group = group_of(meta, attribute, bounds)
            if group is not None:
                rows[group].append(i)
        if rows:
            out[attribute] = _groups(logits, labels, dict(sorted(rows.items())), min_count)
    return out


def _groups(logits: torch.Tensor, labels: torch.Tensor, rows: dict[str, list[int]], min_count: int) -> dict[str, dict[str, Any]]:
    shown = suppress_small({group: len(index) for group, index in rows.items()}, min_count)
    out = {}
    for group, index in rows.items():
        if isinstance(shown[group], str):
            out[group] = {"n": shown[group], **{m: None for m in METRICS}}
            continue
        out[group] = {"n": len(index), **{m: _top_k(logits[index], labels[index], k) for m, k in METRICS.items()}}
    return out


def _top_k(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    n_classes = logits.shape[1]
    return float(multiclass_accuracy(logits.float(), labels.long(), n_classes, average="micro", top_k=min(k, n_classes)))


class SubgroupMonitor:
    """Observer: subgroup metrics of the round's candidate model over every site's validation patients."""

    def __init__(self, evaluator, bounds: Sequence[float], min_count: int):
        self.evaluator = evaluator
        self.bounds = list(bounds)
        self.min_count = int(min_count)

    def on_round(self, record: RoundRecord) -> None:
        logits, labels, metas = [], [], []
        for site in self.evaluator.sites:
            site_logits, site_labels = self.evaluator.predictions(record.global_state, site)
            if site_labels.numel():
                logits.append(site_logits)
                labels.append(site_labels)
                metas.extend(self.evaluator.metas(site))
        if labels:
            record.extra["subgroups"] = subgroup_metrics(torch.cat(logits), torch.cat(labels), metas, self.bounds, self.min_count)
