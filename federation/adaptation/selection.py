"""Per-site model selection on validation only: each site deploys the candidate its own validation patients favour.

Candidates are the global model, its adaptations (calibration.py, finetune.py) and
the site's local-only model. Test patients never take part. The choice, every
candidate's validation figure and the reason are recorded per site (summary, ledger).

A validation split smaller than `min_val` patients, or with a single class, cannot tell
candidates apart. Such a site borrows the consortium's evidence (`choose_all`): it
deploys the method that wins on the validation patients of every site able to choose,
pooled (each patient scored by its own site's candidate of that method); only the
per-method figures need to travel, never a patient. With no such site it deploys
`fallback` (the global model). Ties go to the candidate listed first (the global
model first: a site needs evidence to leave the consortium's model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.metrics import classification_metrics


@dataclass(frozen=True)
class SelectionSettings:
    metric: str = "accuracy"       # a models.metrics name; higher is better
    min_val: int = 10              # fewer validation patients: deploy `fallback`
    fallback: str = "federated"


@dataclass(frozen=True)
class Choice:
    deployed: str
    reason: str
    validation: dict[str, float]   # candidate -> validation metric
    n_val: int

    def as_record(self) -> dict:
        return {"deployed": self.deployed, "reason": self.reason, "n_val": self.n_val, "validation": {k: round(v, 4) for k, v in self.validation.items()}}


def choose(site: str, candidates: dict[str, tuple[torch.Tensor, torch.Tensor]], settings: SelectionSettings) -> Choice:
    """`candidates`: name -> (validation logits, labels), in order of preference on ties."""
    if settings.fallback not in candidates:
        raise ValueError(f"site {site!r}: the fallback {settings.fallback!r} is not among the candidates {list(candidates)}")
    labels = next(iter(candidates.values()))[1]
    n_val = int(labels.numel())
    if n_val < settings.min_val:
        return Choice(settings.fallback, f"validation too small ({n_val} < {settings.min_val} patients)", {}, n_val)
    if labels.unique().numel() < 2:
        return Choice(settings.fallback, "validation has a single class", {}, n_val)
    scores = {name: _metric(logits, y, settings.metric, site) for name, (logits, y) in candidates.items()}
    best = max(scores.values())
    deployed = next(name for name, value in scores.items() if value == best)
    reason = "best on validation" if deployed == settings.fallback or scores[settings.fallback] < best else "tie: listed first"
    return Choice(deployed, reason, scores, n_val)


def choose_all(candidates: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]], settings: SelectionSettings) -> dict[str, Choice]:
    """Every site's choice; sites whose validation cannot decide take the method best on the others' pooled validation."""
    choices = {site: choose(site, c, settings) for site, c in candidates.items()}
    able = [site for site, choice in choices.items() if choice.validation]
    if not able:
        return choices
    methods = [m for m in candidates[able[0]] if all(m in candidates[s] for s in able)]
    pooled = {m: (torch.cat([candidates[s][m][0] for s in able]), torch.cat([candidates[s][m][1] for s in able])) for m in methods}
    consortium = choose("consortium", pooled, SelectionSettings(settings.metric, 0, settings.fallback))
    return borrow_consortium_choice(choices, consortium, len(able), lambda site: consortium.deployed in candidates[site])


def borrow_consortium_choice(choices: dict[str, Choice], consortium: Choice, n_able: int, can_take=lambda site: True, unit: str = "method") -> dict[str, Choice]:
    """Sites whose validation could not decide (no figures of their own) take `consortium`'s choice, made on the
    pooled validation patients of the `n_able` sites that could; the others keep their own choice."""
    out = dict(choices)
    for site, choice in choices.items():
        if not choice.validation and can_take(site):
            reason = f"{choice.reason}: the {unit} best on the pooled validation patients of {n_able} sites"
            out[site] = Choice(consortium.deployed, reason, {f"consortium {k}": v for k, v in consortium.validation.items()}, choice.n_val)
    return out


def _metric(logits: torch.Tensor, labels: torch.Tensor, metric: str, site: str) -> float:
    value = classification_metrics(logits, labels).get(metric)
    if value is None:
        raise ValueError(f"adaptation.select.metric {metric!r} is not a metric of models.metrics")
    return -math.inf if math.isnan(value) else float(value)
