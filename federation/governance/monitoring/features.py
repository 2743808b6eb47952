"""A site's feature statistics as shareable aggregates, the input of drift monitoring.

Per modality: the share of patients who have it, and per feature the mean and
standard deviation over those patients (lab analytes, HPO term frequencies,
variants per patient, note length, image intensity). A feature seen in fewer
than `min_count` patients is left out, so a rare HPO term or a lab measured once
does not single out a patient.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from modalities.quality import DEFAULT_MIN_COUNT
from modalities.site_data import SiteData

Summary = dict[str, Any]


def feature_summary(
    site_data: SiteData, split: str = "train", min_count: int = DEFAULT_MIN_COUNT, names: Mapping[str, Sequence[str]] | None = None
) -> Summary:
    """{"n", "modalities": {m: {"present": share, "features": {name: {"mean", "std", "n"}}}}} over one split.

    `names`: per modality, names for feature positions (lab analytes, HPO term ids by index).
    """
    items = list(site_data.splits[split])
    out: Summary = {"n": len(items), "modalities": {}}
    for modality in site_data.modalities:
        tensors = [item["inputs"][modality] for item in items if modality in item["inputs"]]
        features = _features(str(modality), tensors, list((names or {}).get(modality, ())))
        out["modalities"][modality] = {
            "present": len(tensors) / len(items) if items else None,
            "features": {k: v for k, v in features.items() if v["n"] >= min_count},
        }
    return out


def _features(modality: str, tensors: list[torch.Tensor], names: list[str]) -> dict[str, dict]:
    if not tensors:
        return {}
    if modality == "labs":
        return _labs(tensors, names)
    if modality == "phenotypes":
        return _term_frequencies(tensors, names)
    if modality == "variants":
        return {"variants_per_patient": _stats([float(t.shape[0]) for t in tensors])}
    if modality == "notes":
        return {"tokens_per_note": _stats([float((t != 0).sum()) for t in tensors])}
    if modality == "imaging":
        return {"intensity_mean": _stats([float(t.float().mean()) for t in tensors]), "intensity_std": _stats([float(t.float().std()) for t in tensors])}
    stacked = torch.stack([t.float().reshape(-1) for t in tensors])
    return {_name(names, j): _stats(stacked[:, j].tolist()) for j in range(stacked.shape[1])}


def _labs(tensors: list[torch.Tensor], names: list[str]) -> dict[str, dict]:
    """Lab tensors are standardised values then missing indicators; each analyte over the patients who have it."""
    stacked = torch.stack([t.float() for t in tensors])
    n_analytes = stacked.shape[1] // 2
    values, missing = stacked[:, :n_analytes], stacked[:, n_analytes:]
    return {_name(names, j): _stats(values[missing[:, j] < 0.5, j].tolist()) for j in range(n_analytes)}


def _term_frequencies(tensors: list[torch.Tensor], names: list[str]) -> dict[str, dict]:
    """Share of patients with each observed term (term tensors hold index+1, negative when excluded)."""
    counts = Counter(int(i) - 1 for t in tensors for i in set(t.tolist()) if i > 0)
    n = len(tensors)
    out = {}
    for index, count in counts.items():
        p = count / n
        out[_name(names, index)] = {"mean": p, "std": (p * (1 - p)) ** 0.5, "n": count}
    return out


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std(unbiased=False)), "n": len(values)}


def _name(names: list[str], index: int) -> str:
    return names[index] if index < len(names) else f"feature_{index}"
