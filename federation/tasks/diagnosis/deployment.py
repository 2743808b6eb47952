"""What each site deploys for diagnosis: its local-only scorer, the federated one, or the federated one blended with the
training-free rankers (blend.py, `deployment.blend`), chosen on its validation publications.

The same rule as the main job's (federation/adaptation/selection.py, whose Choice and
small-site step it uses), on the diagnosis
objective the constants were tuned on (top-1 + open top-1 + open top-10): each site
scores both candidates on its own validation patients and deploys the better; ties
keep the federated scorer. A site with fewer than `min_val` validation patients takes
the candidate that wins on the pooled validation patients of the sites that can
choose (only per-candidate figures travel), or the federated scorer when none can.
Test patients never take part.
"""
from __future__ import annotations

import numpy as np

from federation.adaptation.selection import Choice, borrow_consortium_choice
from federation.tasks.diagnosis.metrics import COMPARED

CANDIDATES = ("federated", "local")  # always there, in order of preference on ties
BLEND = "federated+rankers"          # blend.py, when configured: listed last (its weights are fitted on validation)


def objective(hits: dict[str, np.ndarray]) -> float:
    return float(sum(hits[m].mean() for m in COMPARED))


def choose_sites(val_hits: dict[str, dict[str, dict[str, np.ndarray]]], min_val: int = 10) -> dict[str, Choice]:
    """`val_hits[candidate][site]`: per-patient metric values on the site's validation patients; candidates in
    order of preference on ties."""
    candidates = tuple(val_hits)
    sites = list(val_hits[candidates[0]])
    choices = {}
    for site in sites:
        n_val = len(val_hits[candidates[0]][site]["top1"])
        if n_val < min_val:
            choices[site] = Choice(candidates[0], f"validation too small ({n_val} < {min_val} patients)", {}, n_val)
            continue
        scores = {c: objective(val_hits[c][site]) for c in candidates}
        choices[site] = Choice(_best(scores), "best on validation", scores, n_val)
    able = [s for s in sites if choices[s].validation]
    if not able:
        return choices
    pooled = {c: objective({m: np.concatenate([val_hits[c][s][m] for s in able]) for m in COMPARED}) for c in candidates}
    return borrow_consortium_choice(choices, Choice(_best(pooled), "", pooled, 0), len(able), unit="candidate")


def _best(scores: dict[str, float]) -> str:
    top = max(scores.values())
    return next(c for c in scores if scores[c] == top)
