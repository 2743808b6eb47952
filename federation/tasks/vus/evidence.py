"""ACMG/AMP evidence strength (PP3/BP4) from a calibrated posterior, in the manner of Pejaver et al. 2022.

Tavtigian et al. 2018 (Genet Med 20:1054) cast the ACMG/AMP rules as Bayesian:
evidence of strength k multiplies the odds of pathogenicity by
OddsPath = c ** k, with k = 1/8, 1/4, 1/2, 1 for supporting, moderate, strong,
very strong; benign evidence divides by it. c = 350 goes with their prior of
0.1; Pejaver et al. 2022 (AJHG 109:2163) re-derived c = 1124 for the prior of
0.0441 they estimated for rare missense variants, and turned these into
posterior-probability thresholds for in-silico predictors: with prior P,
strength k is met for pathogenic when posterior >= OddsPath * P / ((OddsPath - 1)
* P + 1), and for benign when posterior <= the same with 1 / OddsPath (supporting
pathogenic: 0.100 at P = 0.0441). They capped computational evidence at strong;
`levels` says which strengths are assigned. Prior and c come from config.

A level is met only when the whole interval meets it (`conservative`, as
Pejaver et al. required of the one-sided confidence bound), else "uncertain".
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

STRENGTH_EXPONENTS = {"supporting": 1 / 8, "moderate": 1 / 4, "strong": 1 / 2, "very_strong": 1.0}
UNCERTAIN = "uncertain"


def posterior_threshold(odds_path: float, prior: float) -> float:
    """The posterior that a likelihood ratio of `odds_path` gives from `prior`."""
    return odds_path * prior / ((odds_path - 1.0) * prior + 1.0)


def thresholds(prior: float, odds_very_strong: float = 1124.0, levels: Sequence[str] = ("supporting", "moderate", "strong")) -> dict[str, float]:
    """{"pathogenic_<level>": posterior at or above which, "benign_<level>": at or below which}, strongest first."""
    if not 0.0 < prior < 1.0:
        raise ValueError(f"evidence.prior must be in (0, 1), got {prior}")
    unknown = [level for level in levels if level not in STRENGTH_EXPONENTS]
    if unknown:
        raise ValueError(f"evidence.levels {unknown} unknown; known: {list(STRENGTH_EXPONENTS)}")
    ordered = sorted(levels, key=lambda level: -STRENGTH_EXPONENTS[level])
    out = {}
    for side, sign in (("pathogenic", 1.0), ("benign", -1.0)):
        for level in ordered:
            out[f"{side}_{level}"] = posterior_threshold(odds_very_strong ** (sign * STRENGTH_EXPONENTS[level]), prior)
    return out


def evidence_levels(posterior: np.ndarray, low: np.ndarray, high: np.ndarray, cuts: Mapping[str, float], conservative: bool = True) -> list[str]:
    """The strongest level each variant meets ("uncertain" if none): pathogenic by `low`, benign by `high` when conservative."""
    up = np.asarray(low if conservative else posterior)
    down = np.asarray(high if conservative else posterior)
    out = []
    for i in range(len(up)):
        level = next((name for name, cut in cuts.items() if name.startswith("pathogenic") and up[i] >= cut), None)
        level = level or next((name for name, cut in cuts.items() if name.startswith("benign") and down[i] <= cut), None)
        out.append(level or UNCERTAIN)
    return out


def evidence_config(cfg: Mapping) -> dict:
    """`evidence` config -> keyword arguments of `thresholds` (prior stated there, never defaulted silently)."""
    return {"prior": float(cfg["prior"]), "odds_very_strong": float(cfg["odds_very_strong"]), "levels": list(cfg.get("levels") or STRENGTH_EXPONENTS)}
