"""Flags for updates that look unlike the rest of the round: unusual size, or pointing the other way.

Norms are compared per parameter, among the sites that sent it (a site that trains
five encoders sends a longer update than one that trains two), by a robust z-score:
the distance from the median norm in units of the median absolute deviation,
scaled to a standard deviation, so one huge update cannot hide itself by inflating
the spread. A site's score is the median of its per-parameter scores. Direction is the median,
over the other sites, of the cosine between two sites' deltas on the parameters
both sent (modality-aware, like the aggregation): a site whose update opposes
everyone else's (a label-flipping or sign-flipping site) scores near -1, and, being
one vote among many, it cannot drag the honest sites' scores down with it. These are flags for people to look at, not verdicts; robust strategies
(federation/robust.py) are what protect the model.
"""
from __future__ import annotations

import math
import statistics

import torch

from federation.update import ModelUpdate

MAD_TO_SD = 1.4826  # MAD of a normal distribution times this is its standard deviation
MIN_SITES_FOR_NORMS = 3
NORM_HIGH, NORM_LOW, COSINE_LOW = "norm_high", "norm_low", "cosine_low"


def update_geometry(updates: list[ModelUpdate]) -> dict[str, dict[str, float | None]]:
    """Per site: update norm, its robust z-score in the round, median cosine to the other sites' deltas."""
    z = _norm_z(updates)
    return {u.site: {"norm": u.norm(), "norm_z": z.get(u.site), "cosine": _cosine_to_others(u, updates)} for u in updates}


def anomaly_flags(updates: list[ModelUpdate], norm_z: float = 3.5, min_cosine: float = 0.0) -> dict[str, list[str]]:
    """Per site, the flags its update raises (empty list: nothing unusual)."""
    flags: dict[str, list[str]] = {}
    for site, g in update_geometry(updates).items():
        flags[site] = []
        if g["norm_z"] is not None and g["norm_z"] > norm_z:
            flags[site].append(NORM_HIGH)
        if g["norm_z"] is not None and g["norm_z"] < -norm_z:
            flags[site].append(NORM_LOW)
        if g["cosine"] is not None and g["cosine"] < min_cosine:
            flags[site].append(COSINE_LOW)
    return flags


def _norm_z(updates: list[ModelUpdate]) -> dict[str, float]:
    """Per site, the median over its parameters of the norm's robust z-score among that parameter's senders."""
    per_key: dict[str, dict[str, float]] = {}
    for u in updates:
        for key, delta in u.deltas.items():
            per_key.setdefault(key, {})[u.site] = float(delta.double().norm())
    scores: dict[str, list[float]] = {}
    for norms in per_key.values():
        if len(norms) >= MIN_SITES_FOR_NORMS:
            for site, z in _robust_z(norms).items():
                scores.setdefault(site, []).append(z)
    return {site: statistics.median(z) for site, z in scores.items()}


def _robust_z(norms: dict[str, float]) -> dict[str, float]:
    median = statistics.median(norms.values())
    mad = statistics.median(abs(n - median) for n in norms.values()) * MAD_TO_SD
    if mad == 0:
        return {site: 0.0 if n == median else math.copysign(math.inf, n - median) for site, n in norms.items()}
    return {site: (n - median) / mad for site, n in norms.items()}


def _cosine_to_others(update: ModelUpdate, updates: list[ModelUpdate]) -> float | None:
    cosines = [c for other in updates if other is not update if (c := _cosine(update, other)) is not None]
    return statistics.median(cosines) if cosines else None


def _cosine(a: ModelUpdate, b: ModelUpdate) -> float | None:
    """Cosine between two updates over the parameters both sent; None when they share none."""
    shared = sorted(set(a.deltas) & set(b.deltas))
    if not shared:
        return None
    x = torch.cat([a.deltas[k].double().reshape(-1) for k in shared])
    y = torch.cat([b.deltas[k].double().reshape(-1) for k in shared])
    denominator = float(x.norm() * y.norm())
    return float(x @ y) / denominator if denominator > 0 else None
