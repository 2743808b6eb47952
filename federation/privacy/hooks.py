"""Entry points the engine and the site call for the `privacy` config group (none | dp_sgd | site_dp).

- `wrap_strategy`: site-level DP wraps the configured strategy.
- `site_budgets`: one PrivacyBudget per site for DP-SGD.
- `make_sites_private`: each DP-SGD site's settings and budget (Site.train then fits with `dp_fit`).
"""
from __future__ import annotations

from collections.abc import Mapping

from federation.privacy.accountant import PrivacyBudget
from federation.privacy.dp_sgd import calibrate_noise, planned_steps
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


def make_sites_private(privacy_cfg: Mapping | None, sites, limits: Mapping, rounds: int) -> None:
    """Under DP-SGD, give each site its calibrated settings and its own budget (Site.privacy); no-op otherwise."""
    from federation.site import (
        SitePrivacy,  # the site imports this package's DP-SGD; import it lazily back
    )

    budgets = site_budgets(privacy_cfg, sites)
    for site in sites:
        if site.name in budgets:
            site.privacy = SitePrivacy(site_dp_cfg(privacy_cfg, site, limits, rounds), budgets[site.name])
