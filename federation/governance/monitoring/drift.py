"""Drift of a site's feature statistics: against its own first round, and against the other sites.

The score is the standardised mean difference (SMD, |mean_a - mean_b| over the
pooled standard deviation), the usual measure of covariate shift between two
groups, averaged over the features both summaries share; a modality's presence
rate counts as one more (binary) feature. Against the first round it shows data
that changed at a site (a new scanner, a coding change); against the pooled other
sites it shows a site whose data differs from everyone else's (a unit left
unconverted, sparse phenotyping).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from federation.governance.monitoring.features import Summary
from federation.round_record import RoundRecord

MIN_SD = 1e-3  # a feature constant in both summaries still shows drift if its value moved


def smd(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    pooled = math.sqrt((a["std"] ** 2 + b["std"] ** 2) / 2)
    return abs(a["mean"] - b["mean"]) / max(pooled, MIN_SD)


def _binary(p: float | None) -> dict[str, float] | None:
    return None if p is None else {"mean": p, "std": math.sqrt(p * (1 - p))}


def _pairs(current: Summary, reference: Summary):
    """(name, current stats, reference stats) for every feature both summaries have."""
    for modality, now in current["modalities"].items():
        then = reference["modalities"].get(modality)
        if then is None:
            continue
        a, b = _binary(now.get("present")), _binary(then.get("present"))
        if a and b:
            yield f"{modality}:present", a, b
        for name, stats in now["features"].items():
            if name in then["features"]:
                yield f"{modality}:{name}", stats, then["features"][name]


def drift_score(current: Summary, reference: Summary) -> dict[str, Any]:
    """{"score": mean SMD over shared features, "worst": [feature, SMD], "n_features"}; score None when nothing is shared."""
    scores = {name: smd(a, b) for name, a, b in _pairs(current, reference) if _finite(a) and _finite(b)}
    if not scores:
        return {"score": None, "worst": None, "n_features": 0}
    worst = max(scores, key=scores.get)
    return {"score": sum(scores.values()) / len(scores), "worst": [worst, scores[worst]], "n_features": len(scores)}


def _finite(stats: Mapping[str, float]) -> bool:
    return math.isfinite(stats["mean"]) and math.isfinite(stats["std"])


def pool_summaries(summaries: list[Summary]) -> Summary:
    """One summary over several sites: presence and means weighted by patients, variance within plus between."""
    pooled: Summary = {"n": sum(s["n"] for s in summaries), "modalities": {}}
    modalities = {m for s in summaries for m in s["modalities"]}
    for modality in sorted(modalities):
        parts = [(s["n"], s["modalities"][modality]) for s in summaries if modality in s["modalities"]]
        total = sum(n for n, _ in parts)
        present = sum(n * (p["present"] or 0.0) for n, p in parts) / total if total else None
        names = {name for _, p in parts for name in p["features"]}
        with_modality = [(n * (p["present"] or 0.0), p) for n, p in parts]
        features = {name: _pool([(w, p["features"][name]) for w, p in with_modality if name in p["features"]]) for name in sorted(names)}
        pooled["modalities"][modality] = {"present": present, "features": features}
    return pooled


def _pool(parts: list[tuple[float, Mapping[str, float]]]) -> dict[str, float]:
    """Weights are each site's patients with the modality (a term frequency's own n counts only the patients with the term)."""
    total = sum(w for w, _ in parts)
    if total <= 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    mean = sum(w * s["mean"] for w, s in parts) / total
    var = sum(w * (s["std"] ** 2 + (s["mean"] - mean) ** 2) for w, s in parts) / total
    return {"mean": mean, "std": math.sqrt(var), "n": sum(int(s.get("n", 0)) for _, s in parts)}


class DriftMonitor:
    """Observer: each site's drift against its first round and against the pooled other sites.

    `summaries` returns the sites' current feature summaries (in a deployment, what
    each site sends; in process, `feature_summary` over its data). A site whose
    drift against its first round exceeds `threshold` is flagged.
    """

    def __init__(self, summaries: Callable[[], dict[str, Summary]], threshold: float):
        self.summaries = summaries
        self.threshold = float(threshold)
        self.reference: dict[str, Summary] = {}

    def on_round(self, record: RoundRecord) -> None:
        current = self.summaries()
        for site, summary in current.items():
            self.reference.setdefault(site, summary)
        findings = {}
        for site, summary in current.items():
            others = [s for name, s in current.items() if name != site]
            vs_first = drift_score(summary, self.reference[site])
            vs_others = drift_score(summary, pool_summaries(others)) if others else {"score": None, "worst": None}
            flagged = vs_first["score"] is not None and vs_first["score"] > self.threshold
            findings[site] = {"vs_first": vs_first["score"], "vs_others": vs_others["score"], "worst_vs_others": vs_others["worst"], "flagged": flagged}
        record.extra["drift"] = findings
