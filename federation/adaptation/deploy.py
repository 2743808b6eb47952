"""Every site's candidates, scored on its validation split, and the one it deploys: the `deployed` column.

For each site: the global model as the site runs it (`federated`), each configured
adaptation of it (`finetuned`, `finetuned_head`, `ditto`) and the site's own local-only
model (`local`) predict the site's validation and test patients. `calibrate` adds a
calibrated version of every one of these base candidates: `calibrated` (of the global
model, the name it always had), `finetuned+calibrated`, `local+calibrated`, and so on;
calibration corrects a model's threshold and class prior for the site whichever model it
is, and a fine-tuned or local-only network is not calibrated by being trained on the
site's patients (networks trained on NLL are often overconfident: Guo et al., ICML 2017). The site chooses on
validation (selection.py; a site with too few validation patients takes the method the
consortium's pooled validation favours) and its test predictions under `deployed` are
those of its choice. Calibration is scored on validation out of fold (cross-fitting),
so the few numbers it fits on validation do not flatter it in the choice.

`mixture` (mixture.py, not a default) adds a per-site mixture of the calibrated global
model and the local-only one, alpha fitted on validation and scored out of fold the same
way: the post-hoc, inference-time form of APFL's global/local interpolation. It needs
every site's local-only model (`adaptation.include_local` and `baselines.local`) and is
refused at start-up without it (ConfigError naming the method's setting).

`report_only` methods are fitted and their test predictions reported beside the
candidates, but they never compete: a benchmark can show Ditto or FedRep without
changing what the configured rule deploys.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from federation.adaptation.calibration import cross_fitted, fit_adjustment
from federation.adaptation.finetune import FineTuneSettings, fine_tune
from federation.adaptation.mixture import cross_fitted_mixture, fit_mixture
from federation.adaptation.selection import CRITERIA, SelectionSettings, choose_all
from federation.evaluation import predict
from federation.settings import ConfigError
from federation.site import Site
from federation.state import StateDict, set_state

METHODS = ("calibrate", "finetune", "finetune_head", "ditto", "mixture")
APPROACH_OF = {"calibrate": "calibrated", "finetune": "finetuned", "finetune_head": "finetuned_head", "ditto": "ditto", "mixture": "mixture"}
POST_HOC = ("calibrate", "mixture")  # fitted on the other candidates' predictions, nothing trained
BASES = ("federated", "finetuned", "finetuned_head", "ditto", "local")  # what `calibrate` calibrates, where present
Pair = tuple[torch.Tensor, torch.Tensor]  # (logits, labels)


def calibrated_name(base: str) -> str:
    """`calibrated` for the global model (its name before the others could be calibrated), else `<base>+calibrated`."""
    return "calibrated" if base == "federated" else f"{base}+calibrated"


CANDIDATES = (*BASES, *(calibrated_name(b) for b in BASES), "mixture")


@dataclass(frozen=True)
class AdaptationSettings:
    methods: tuple[str, ...] = ("calibrate", "finetune")
    include_local: bool = True
    calibration_l2: float = 0.01
    calibration_folds: int = 5
    finetune: FineTuneSettings = field(default_factory=FineTuneSettings)
    select: SelectionSettings = field(default_factory=SelectionSettings)
    report_only: tuple[str, ...] = ()
    bootstrap_resamples: int = 2000   # deployed minus local-only: paired-bootstrap resamples over test patients

    def __post_init__(self):
        check_methods(self.methods, self.report_only)
        check_mixture(self.methods, self.report_only, self.include_local)

    @staticmethod
    def from_cfg(cfg: DictConfig) -> AdaptationSettings:
        plain = OmegaConf.to_container(cfg, resolve=True)
        methods, report_only = tuple(plain.get("methods") or ()), tuple(plain.get("report_only") or ())
        check_methods(methods, report_only)
        check_mixture(methods, report_only, bool(plain.get("include_local", True)))
        select_on = plain.get("select_on", "log_loss")
        check_selection(select_on, plain.get("select") or {})
        calibration = plain.get("calibration") or {}
        return AdaptationSettings(
            methods, bool(plain.get("include_local", True)), float(calibration.get("l2", 0.01)), int(calibration.get("folds", 5)),
            FineTuneSettings(**plain.get("finetune", {})), SelectionSettings(select_on, **plain.get("select", {})),
            report_only, int(plain.get("bootstrap_resamples", 2000)),
        )


def check_methods(methods, report_only=()) -> None:
    """Known method names; a method either competes (`methods`) or is only shown (`report_only`), not both."""
    for setting, names in (("adaptation.methods", methods), ("adaptation.report_only", report_only)):
        unknown = [m for m in names or () if m not in METHODS]
        if unknown:
            raise ConfigError(setting, list(names), f"unknown {unknown}; known: {list(METHODS)}")
    both = sorted(set(methods or ()) & set(report_only or ()))
    if both:
        raise ConfigError("adaptation.report_only", list(report_only), f"{both} already compete in adaptation.methods")
    if "calibrate" in (report_only or ()):
        raise ConfigError("adaptation.report_only", list(report_only), "calibrate makes candidates of the others; list it in adaptation.methods")


def check_mixture(methods, report_only=(), include_local: bool = True, baselines_local: bool = True) -> None:
    """`mixture` mixes the global model with the site's local-only model: refused where that model is not a candidate
    (adaptation.include_local) or not trained (baselines.local), naming the setting that lists the method."""
    for setting, names in (("adaptation.methods", methods), ("adaptation.report_only", report_only)):
        if "mixture" not in (names or ()):
            continue
        missing = [s for s, on in (("adaptation.include_local", include_local), ("baselines.local", baselines_local)) if not on]
        if missing:
            raise ConfigError(setting, list(names), f"mixture mixes the global model with each site's local-only model: needs {' and '.join(f'{m}=true' for m in missing)}")


def check_selection(select_on, select: dict) -> None:
    """The criterion is a known one; `select.metric` (before select_on existed) is refused, not silently ignored."""
    if select_on not in CRITERIA:
        raise ConfigError("adaptation.select_on", select_on, f"must be one of {list(CRITERIA)}")
    if "metric" in select:
        raise ConfigError("adaptation.select.metric", select["metric"], "moved to adaptation.select_on (log_loss or accuracy)")


def approach_order(known: Sequence[str], adapted: Iterable[str]) -> list[str]:
    """`known` (the report's approaches) with the adaptation approaches it does not list put just before `deployed`."""
    extra = [a for a in adapted if a not in known]
    at = list(known).index("deployed") if "deployed" in known else len(known)
    return [*known[:at], *extra, *known[at:]]


@dataclass
class SiteDeployment:
    test: dict[str, Pair]   # approach -> test predictions, `deployed` included
    record: dict            # the choice, the criterion, validation figures, reason, what each method fitted


@dataclass
class SitePredictions:
    """One site's base candidates (the global model, its trained adaptations, the local-only model): validation and
    test predictions, and what each adaptation fitted. Post-hoc candidates (calibration, mixture) are made from these."""

    val: dict[str, Pair]
    test: dict[str, Pair]
    fitted: dict[str, dict]


def deploy(
    module: L.LightningModule,
    sites: list[Site],
    global_state: StateDict,
    local_states: dict[str, StateDict],
    settings: AdaptationSettings,
    seed: int,
    device: str,
) -> dict[str, SiteDeployment]:
    """Per site: every candidate's test predictions, `deployed` the one its validation split (or the consortium's) chose."""
    return choose_deployments(site_predictions(module, sites, global_state, local_states, settings, seed, device), settings)


def site_predictions(module, sites: list[Site], global_state: StateDict, local_states: dict[str, StateDict], settings: AdaptationSettings, seed: int, device: str) -> dict[str, SitePredictions]:
    """Every site's base candidates, predicted on its validation and test patients."""
    out = {site.name: _base_candidates(module, site, global_state, local_states.get(site.name), settings, seed + 700 + i, device) for i, site in enumerate(sites)}
    set_state(module, global_state)
    return out


def choose_deployments(predictions: dict[str, SitePredictions], settings: AdaptationSettings) -> dict[str, SiteDeployment]:
    """The post-hoc candidates of every site, and each site's choice among all of them on validation."""
    val, test, fitted = {}, {}, {}
    for name, base in predictions.items():
        val[name], test[name], fitted[name] = _with_post_hoc(name, base, settings)
    choices = choose_all(val, settings.select)
    return {name: SiteDeployment({**test[name], "deployed": test[name][c.deployed]}, {**c.as_record(), "fitted": fitted[name]}) for name, c in choices.items()}


def _base_candidates(module, site: Site, global_state: StateDict, local_state: StateDict | None, settings: AdaptationSettings, seed: int, device: str) -> SitePredictions:
    val, test, fitted = {}, {}, {}
    val["federated"], test["federated"] = _predict(module, site, site.personalise(global_state), device)
    for method in (*settings.methods, *settings.report_only):
        if method not in POST_HOC:
            name = APPROACH_OF[method]
            val[name], test[name], fitted[name] = _fine_tuned(module, site, global_state, method, settings, seed, (val["federated"], test["federated"]), device)
    if settings.include_local and local_state is not None:
        val["local"], test["local"] = _predict(module, site, local_state, device)
    return SitePredictions(val, test, fitted)


def _with_post_hoc(site: str, base: SitePredictions, settings: AdaptationSettings):
    """(validation predictions of the candidates, test predictions of every approach, what each method fitted) at one site."""
    val, test, fitted = base.val, dict(base.test), dict(base.fitted)
    shown_only = [APPROACH_OF[m] for m in settings.report_only]
    candidates = {}
    for name in (b for b in val if b not in shown_only):
        candidates[name] = val[name]
        if "calibrate" in settings.methods:
            calibrated = calibrated_name(name)
            candidates[calibrated], test[calibrated], fitted[calibrated] = _calibrated(val[name], test[name], settings)
    if "mixture" in (*settings.methods, *settings.report_only):
        if "local" not in val:
            raise ConfigError("adaptation.methods", list(settings.methods), f"mixture needs site {site!r}'s local-only model, and there is none (baselines.local)")
        scored, test["mixture"], fitted["mixture"] = _mixture((val["federated"], test["federated"]), (val["local"], test["local"]), settings)
        if "mixture" in settings.methods:
            candidates["mixture"] = scored  # listed last: the most numbers fitted on validation, so ties go elsewhere
    return candidates, {name: test[name] for name in (*candidates, *shown_only)}, fitted


def _fine_tuned(module, site: Site, global_state: StateDict, method: str, settings: AdaptationSettings, seed: int, federated: tuple[Pair, Pair], device: str):
    """(validation, test, record) of the global model fine-tuned at the site: all of it, its head (FedRep), or with Ditto's pull."""
    if not len(federated[0][1]):  # nothing to stop on: the method leaves the global model as it is
        return *federated, {"skipped": "no validation patients"}
    part = "head" if method == "finetune_head" else "all"
    mu = settings.finetune.proximal_mu if method == "ditto" else 0.0
    state, record = fine_tune(site, module, global_state, FineTuneSettings(settings.finetune.max_epochs, settings.finetune.patience, part, mu), seed)
    return *_predict(module, site, state, device), record


def _calibrated(val: Pair, test: Pair, settings: AdaptationSettings) -> tuple[Pair, Pair, dict]:
    """(validation, test, record) of a candidate calibrated on the site's validation split: the validation
    logits cross-fitted (what the choice sees), the test logits under the adjustment fitted on all of validation."""
    if not len(val[1]):
        return val, test, {"skipped": "no validation patients"}
    adjustment = fit_adjustment(*val, l2=settings.calibration_l2)
    return (_cross_fitted(*val, settings), val[1]), (adjustment(test[0]), test[1]), adjustment.as_record()


def _mixture(federated: tuple[Pair, Pair], local: tuple[Pair, Pair], settings: AdaptationSettings) -> tuple[Pair, Pair, dict]:
    """(validation, test, record) of the mixture of the calibrated global model and the local-only one (mixture.py):
    the validation mixture cross-fitted (what the choice sees), the test one fitted on all of validation."""
    (val_global, test_global), (val_local, test_local) = federated, local
    labels = val_global[1]
    if not len(labels):
        return val_global, test_global, {"skipped": "no validation patients"}
    l2, folds = settings.calibration_l2, settings.calibration_folds
    mixture = fit_mixture(val_global[0], val_local[0], labels, l2, folds)
    scored, fold_alphas = cross_fitted_mixture(val_global[0], val_local[0], labels, l2, folds)
    return (scored, labels), (mixture(test_global[0], test_local[0]), test_global[1]), {**mixture.as_record(), "fold_alphas": fold_alphas}


def _predict(module, site: Site, state: StateDict, device: str) -> tuple[Pair, Pair]:
    set_state(module, state)
    return predict(module.model, site.loader("val"), device), predict(module.model, site.loader("test"), device)


def _cross_fitted(logits: torch.Tensor, labels: torch.Tensor, settings: AdaptationSettings) -> torch.Tensor:
    """Each validation patient's calibrated logits from an adjustment fitted on the other folds."""
    return cross_fitted(logits, labels, settings.calibration_l2, settings.calibration_folds)
