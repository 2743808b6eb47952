"""Every site's candidates, scored on its validation split, and the one it deploys: the `deployed` column.

For each site: the global model as the site runs it (`federated`), each configured
adaptation of it (`calibrated`, `finetuned`, `finetuned_head`, `ditto`) and the site's own
local-only model (`local`) predict the site's validation and test patients; the site
chooses on validation (selection.py; a site with too few validation patients takes
the method the consortium's pooled validation favours) and its test predictions under
`deployed` are those of its choice. Calibration is scored on validation out of fold (cross-fitting),
so the few numbers it fits on validation do not flatter it in the choice.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from federation.adaptation.calibration import fit_adjustment
from federation.adaptation.finetune import FineTuneSettings, fine_tune
from federation.adaptation.selection import SelectionSettings, choose_all
from federation.evaluation import predict
from federation.settings import ConfigError
from federation.site import Site
from federation.state import StateDict, set_state

METHODS = ("calibrate", "finetune", "finetune_head", "ditto")
APPROACH_OF = {"calibrate": "calibrated", "finetune": "finetuned", "finetune_head": "finetuned_head", "ditto": "ditto"}
Pair = tuple[torch.Tensor, torch.Tensor]  # (logits, labels)


@dataclass(frozen=True)
class AdaptationSettings:
    methods: tuple[str, ...] = ("calibrate", "finetune")
    include_local: bool = True
    calibration_l2: float = 0.01
    calibration_folds: int = 5
    finetune: FineTuneSettings = field(default_factory=FineTuneSettings)
    select: SelectionSettings = field(default_factory=SelectionSettings)

    @staticmethod
    def from_cfg(cfg: DictConfig) -> AdaptationSettings:
        plain = OmegaConf.to_container(cfg, resolve=True)
        check_methods(plain.get("methods", ()))
        return AdaptationSettings(
            tuple(plain.get("methods", ())), bool(plain.get("include_local", True)), float(plain.get("calibration", {}).get("l2", 0.01)),
            int(plain.get("calibration", {}).get("folds", 5)), FineTuneSettings(**plain.get("finetune", {})), SelectionSettings(**plain.get("select", {})),
        )


def check_methods(methods) -> None:
    unknown = [m for m in methods or () if m not in METHODS]
    if unknown:
        raise ConfigError("adaptation.methods", list(methods), f"unknown {unknown}; known: {list(METHODS)}")


@dataclass
class SiteDeployment:
    test: dict[str, Pair]   # approach -> test predictions, `deployed` included
    record: dict            # the choice, validation figures, reason, what each method fitted


def deploy(module: L.LightningModule, sites: list[Site], global_state: StateDict, local_states: dict[str, StateDict], settings: AdaptationSettings, seed: int, device: str) -> dict[str, SiteDeployment]:
    """Per site: every candidate's test predictions, `deployed` the one its validation split (or the consortium's) chose."""
    val, test, fitted = {}, {}, {}
    for i, site in enumerate(sites):
        val[site.name], test[site.name], fitted[site.name] = _candidates(module, site, global_state, local_states.get(site.name), settings, seed + 700 + i, device)
    set_state(module, global_state)
    choices = choose_all(val, settings.select)
    out = {}
    for name, choice in choices.items():
        out[name] = SiteDeployment({**test[name], "deployed": test[name][choice.deployed]}, {**choice.as_record(), "fitted": fitted[name]})
    return out


def _candidates(module, site: Site, global_state: StateDict, local_state: StateDict | None, settings: AdaptationSettings, seed: int, device: str):
    """(validation predictions, test predictions, what each method fitted) per candidate of one site."""
    val, test, fitted = {}, {}, {}
    val["federated"], test["federated"] = _predict(module, site, site.personalise(global_state), device)
    for method in settings.methods:
        name = APPROACH_OF[method]
        if not len(val["federated"][1]):  # nothing to fit or stop on: the method leaves the global model as it is
            val[name], test[name], fitted[name] = val["federated"], test["federated"], {"skipped": "no validation patients"}
        elif method == "calibrate":
            adjustment = fit_adjustment(*val["federated"], l2=settings.calibration_l2)
            fitted[name] = adjustment.as_record()
            val[name] = (_cross_fitted(*val["federated"], settings), val["federated"][1])
            test[name] = (adjustment(test["federated"][0]), test["federated"][1])
        else:
            part = "head" if method == "finetune_head" else "all"
            mu = settings.finetune.proximal_mu if method == "ditto" else 0.0
            state, fitted[name] = fine_tune(site, module, global_state, FineTuneSettings(settings.finetune.max_epochs, settings.finetune.patience, part, mu), seed)
            val[name], test[name] = _predict(module, site, state, device)
    if settings.include_local and local_state is not None:
        val["local"], test["local"] = _predict(module, site, local_state, device)
    return val, test, fitted


def _predict(module, site: Site, state: StateDict, device: str) -> tuple[Pair, Pair]:
    set_state(module, state)
    return predict(module.model, site.loader("val"), device), predict(module.model, site.loader("test"), device)


def _cross_fitted(logits: torch.Tensor, labels: torch.Tensor, settings: AdaptationSettings) -> torch.Tensor:
    """Each validation patient's calibrated logits from an adjustment fitted on the other folds."""
    n = len(labels)
    folds = min(settings.calibration_folds, n)
    if folds < 2:
        return logits
    order = torch.from_numpy(np.random.default_rng(0).permutation(n))
    out = logits.clone()
    for held in order.tensor_split(folds):
        keep = torch.ones(n, dtype=torch.bool)
        keep[held] = False
        out[held] = fit_adjustment(logits[keep], labels[keep], l2=settings.calibration_l2)(logits[held])
    return out
