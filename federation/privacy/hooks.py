"""Entry points the engine and the site call for the `privacy` config group (none | dp_sgd | site_dp).

- `wrap_strategy`: site-level DP wraps the configured strategy.
- `site_budgets`: one PrivacyBudget per site for DP-SGD.
- `make_sites_private`: each DP-SGD site's settings and budget (Site.train then fits with `dp_fit`).
- `pretrain_public`: the initial global model trained on public data (`public_pretraining`), before any round.
"""
from __future__ import annotations

from collections.abc import Mapping

from federation.privacy.accountant import PrivacyBudget
from federation.privacy.dp_sgd import dp_limits, logical_batch, planned_steps
from federation.privacy.plan import check_delta, noise_for_plan
from federation.privacy.public_parts import check_trainable
from federation.privacy.public_pretraining import pretrain_on_public
from federation.privacy.site_dp import SiteLevelDP
from federation.strategies.base import Strategy

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
        epsilon, plan = float(cfg["epsilon"]), f"the coordinator plans {int(rounds)} noisy rounds"
        sigma = noise_for_plan(epsilon, float(cfg["delta"]), float(cfg["sample_rate"]), int(rounds), plan)
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
        n = site.n_train
        batch = logical_batch(cfg, n, site.batch_size)
        steps = planned_steps(dp_limits(limits, cfg), n, batch) * int(rounds)
        epsilon = float(cfg["epsilon"])
        plan = f"site {site.name!r} plans {steps} DP-SGD steps"
        cfg["noise_multiplier"] = noise_for_plan(epsilon, float(cfg["delta"]), batch / n, steps, plan)
    return cfg


def make_sites_private(privacy_cfg: Mapping | None, sites, limits: Mapping, rounds: int, model=None) -> None:
    """Under DP-SGD, give each site its calibrated settings and its own budget (Site.privacy); no-op otherwise.

    The plan is checked first, before any site trains (plan.py): delta against the
    smallest site, the budget reachable over the planned rounds, something left to
    train once `freeze` is applied to `model` (when given).
    """
    from federation.site import (
        SitePrivacy,  # the site imports this package's DP-SGD; import it lazily back
    )

    if privacy_kind(privacy_cfg) != "dp_sgd":
        return
    check_delta(float(privacy_cfg["delta"]), {f"site {s.name!r}": s.n_train for s in sites}, "training patients")
    if model is not None:
        check_trainable(model, privacy_cfg.get("freeze") or ())
    budgets = site_budgets(privacy_cfg, sites)
    for site in sites:
        if site.name in budgets:
            site.privacy = SitePrivacy(site_dp_cfg(privacy_cfg, site, limits, rounds), budgets[site.name])


def pretrain_public(privacy_cfg: Mapping | None, module, labels, seed: int) -> int:
    """Under a DP setting with `public_pretraining`, train the initial model on public data first; the patients used (0: none)."""
    if privacy_kind(privacy_cfg) == "none" or not privacy_cfg.get("public_pretraining"):
        return 0
    return pretrain_on_public(module, list(labels), privacy_cfg["public_pretraining"], seed)
