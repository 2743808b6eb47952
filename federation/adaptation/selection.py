"""Per-site model selection on validation only: each site deploys the candidate its own validation patients favour.

Candidates are the global model, its adaptations (calibration.py, finetune.py) and
the site's local-only model. Test patients never take part. The choice, the criterion
it was made on, every candidate's validation figure and the reason are recorded per
site (summary, ledger).

The criterion (`adaptation.select_on`) is the validation log loss by default: the
mean negative log-likelihood of the true class, a strictly proper scoring rule
(Gneiting & Raftery, JASA 2007), so it is minimised in expectation only by the true
class probabilities. Every patient contributes a graded figure instead of a 0/1 hit,
so on the 6-34 validation patients of a small site it separates candidates that
accuracy ties, or ranks by the luck of one or two patients. `accuracy` stays an option.

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
from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.metrics import classification_metrics


def log_loss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood of the true class under softmax(logits); lower is better."""
    return float(torch.nn.functional.cross_entropy(logits.detach().float(), labels.long()))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(classification_metrics(logits, labels)["accuracy"])


@dataclass(frozen=True)
class Criterion:
    score: Callable[[torch.Tensor, torch.Tensor], float]
    lower_is_better: bool

    def goodness(self, value: float) -> float:
        """Higher is better whatever the criterion; NaN (e.g. non-finite logits) is the worst."""
        if math.isnan(value):
            return -math.inf
        return -value if self.lower_is_better else value


CRITERIA = {"log_loss": Criterion(log_loss, lower_is_better=True), "accuracy": Criterion(accuracy, lower_is_better=False)}


@dataclass(frozen=True)
class SelectionSettings:
    on: str = "log_loss"           # a name of CRITERIA (adaptation.select_on)
    min_val: int = 10              # fewer validation patients: deploy `fallback`
    fallback: str = "federated"

    def criterion(self) -> Criterion:
        if self.on not in CRITERIA:
            raise ValueError(f"adaptation.select_on {self.on!r} is not one of {list(CRITERIA)}")
        return CRITERIA[self.on]


@dataclass(frozen=True)
class Choice:
    deployed: str
    reason: str
    validation: dict[str, float]   # candidate -> validation figure under `criterion`
    n_val: int
    criterion: str | None = None   # what the figures are (e.g. "log_loss"); recorded so an auditor sees what decided

    def as_record(self) -> dict:
        record = {"deployed": self.deployed, "reason": self.reason, "n_val": self.n_val}
        if self.criterion is not None:
            record["criterion"] = self.criterion
        return {**record, "validation": {k: round(v, 4) for k, v in self.validation.items()}}


def choose(site: str, candidates: dict[str, tuple[torch.Tensor, torch.Tensor]], settings: SelectionSettings) -> Choice:
    """`candidates`: name -> (validation logits, labels), in order of preference on ties."""
    criterion = settings.criterion()
    if settings.fallback not in candidates:
        raise ValueError(f"site {site!r}: the fallback {settings.fallback!r} is not among the candidates {list(candidates)}")
    labels = next(iter(candidates.values()))[1]
    n_val = int(labels.numel())
    if n_val < settings.min_val:
        return Choice(settings.fallback, f"validation too small ({n_val} < {settings.min_val} patients)", {}, n_val, settings.on)
    if labels.unique().numel() < 2:
        return Choice(settings.fallback, "validation has a single class", {}, n_val, settings.on)
    scores = {name: criterion.score(logits, y) for name, (logits, y) in candidates.items()}
    best = max(criterion.goodness(v) for v in scores.values())
    deployed = next(name for name, value in scores.items() if criterion.goodness(value) == best)
    fallback_best = criterion.goodness(scores[settings.fallback]) == best
    reason = "tie: listed first" if fallback_best and deployed != settings.fallback else "best on validation"
    return Choice(deployed, reason, scores, n_val, settings.on)


def choose_all(candidates: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]], settings: SelectionSettings) -> dict[str, Choice]:
    """Every site's choice; sites whose validation cannot decide take the method best on the others' pooled validation."""
    choices = {site: choose(site, c, settings) for site, c in candidates.items()}
    able = [site for site, choice in choices.items() if choice.validation]
    if not able:
        return choices
    methods = [m for m in candidates[able[0]] if all(m in candidates[s] for s in able)]
    pooled = {m: (torch.cat([candidates[s][m][0] for s in able]), torch.cat([candidates[s][m][1] for s in able])) for m in methods}
    consortium = choose("consortium", pooled, SelectionSettings(settings.on, 0, settings.fallback))
    return borrow_consortium_choice(choices, consortium, len(able), lambda site: consortium.deployed in candidates[site])


def borrow_consortium_choice(choices: dict[str, Choice], consortium: Choice, n_able: int, can_take=lambda site: True, unit: str = "method") -> dict[str, Choice]:
    """Sites whose validation could not decide (no figures of their own) take `consortium`'s choice, made on the
    pooled validation patients of the `n_able` sites that could; the others keep their own choice."""
    out = dict(choices)
    for site, choice in choices.items():
        if not choice.validation and can_take(site):
            reason = f"{choice.reason}: the {unit} best on the pooled validation patients of {n_able} sites"
            validation = {f"consortium {k}": v for k, v in consortium.validation.items()}
            out[site] = Choice(consortium.deployed, reason, validation, choice.n_val, consortium.criterion or choice.criterion)
    return out
