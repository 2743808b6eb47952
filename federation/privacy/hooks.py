"""Entry points the engine and the site call for the `privacy` config group (none | dp_sgd | site_dp).

- `wrap_strategy`: site-level DP wraps the configured strategy.
- `site_budgets`: one PrivacyBudget per site for DP-SGD.
- `private_train`: what `Site.train` does under DP-SGD, `dp_fit` in place of `trainer.fit`.
"""
from __future__ import annotations

from collections.abc import Mapping

import lightning as L

from federation.privacy.accountant import PrivacyBudget
from federation.privacy.dp_sgd import calibrate_noise, dp_fit, planned_steps
from federation.privacy.site_dp import SiteLevelDP
from federation.state import StateDict, get_state, set_state
from federation.strategies.base import Strategy
from federation.update import ModelUpdate
from models.multimodal import parameter_modality

KINDS = ("none", "dp_sgd", "site_dp")


def privacy_kind(privacy_cfg: Mapping | None) -> str:
    kind = (privacy_cfg or {}).get("kind", "none")
    if kind not in KINDS:
        raise ValueError(f"privacy.kind must be one of {KINDS}, got {kind!r}")
    return kind


def wrap_strategy(strategy: Strategy, privacy_cfg: Mapping | None, rounds: int) -> Strategy:
    """The strategy itself, or wrapped in site-level DP (noise calibrated to spend `epsilon` over `rounds`)."""
    if privacy_kind(privacy_cfg) != "site_dp":
        return strategy
    cfg = dict(privacy_cfg)
    sigma = cfg.get("noise_multiplier")
    if sigma is None:
        sigma = calibrate_noise(float(cfg["epsilon"]), float(cfg["delta"]), float(cfg["sample_rate"]), int(rounds))
    return SiteLevelDP(strategy, float(cfg["clip_norm"]), float(sigma), float(cfg["epsilon"]), float(cfg["delta"]),
                       float(cfg["sample_rate"]), int(cfg.get("seed", 0)))


def site_budgets(privacy_cfg: Mapping | None, sites) -> dict[str, PrivacyBudget]:
    """One budget per site under DP-SGD (kept at the site in a deployment); none otherwise."""
    if privacy_kind(privacy_cfg) != "dp_sgd":
        return {}
    return {s.name: PrivacyBudget(float(privacy_cfg["epsilon"]), float(privacy_cfg["delta"]), s.name) for s in sites}


def site_dp_cfg(privacy_cfg: Mapping, site, limits: Mapping, rounds: int) -> dict:
    """The site's DP-SGD settings, with the noise calibrated to its own sampling rate over all planned rounds."""
    cfg = dict(privacy_cfg)
    if cfg.get("noise_multiplier") is None:
        n, batch = site.n_train, site.batch_size
        steps = planned_steps(limits, n, batch) * int(rounds)
        cfg["noise_multiplier"] = calibrate_noise(float(cfg["epsilon"]), float(cfg["delta"]), batch / n, steps)
    return cfg


def private_train(site, module, global_state: StateDict, limits: Mapping, round_: int, seed: int, dp_cfg: Mapping, budget: PrivacyBudget) -> ModelUpdate:
    """Site.train under DP-SGD: the same update, with dp_fit for trainer.fit; raises BudgetExhausted before training."""
    set_state(module, global_state)
    L.seed_everything(seed, workers=True, verbose=False)
    if hasattr(module, "set_class_counts"):  # imbalance losses (models/losses.py) need the site's label counts
        module.set_class_counts(site.class_counts(module.model.n_classes))
    try:
        spent = dp_fit(module, site.loader("train", shuffle=True, seed=seed), limits, dp_cfg, budget, seed=seed)
    finally:
        if hasattr(module, "set_class_counts"):
            module.set_class_counts(None)
    local = get_state(module, list(global_state))
    counts = sample_counts(site, list(global_state), module.model.modalities)
    deltas = {k: local[k] - global_state[k] for k in counts}
    metrics = {"train_loss": spent.train_loss, "epsilon": spent.epsilon, "delta": spent.delta}
    return ModelUpdate(site.name, round_, deltas, counts, site.n_train, metrics)


def sample_counts(site, keys: list[str], model_modalities: list[str]) -> dict[str, int]:
    """Per key, the site's training samples that inform it (as Site does)."""
    by_modality = site.modality_counts()
    counts = {}
    for key in keys:
        modality = parameter_modality(key, model_modalities)
        count = site.n_train if modality is None else by_modality.get(modality, 0)
        if count > 0:
            counts[key] = count
    return counts


def make_sites_private(privacy_cfg: Mapping | None, sites, limits: Mapping, rounds: int) -> None:
    """Under DP-SGD, give each site its calibrated settings and its own budget (Site.privacy); no-op otherwise."""
    from federation.site import (
        SitePrivacy,  # the site imports this package's DP-SGD; import it lazily back
    )

    budgets = site_budgets(privacy_cfg, sites)
    for site in sites:
        if site.name in budgets:
            site.privacy = SitePrivacy(site_dp_cfg(privacy_cfg, site, limits, rounds), budgets[site.name])
