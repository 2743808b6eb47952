"""Simulated misbehaving sites, for robustness studies: what a Byzantine or broken site sends.

Configured as `federation.attackers: [{site: <name>, kind: sign_flip, scale: 10}, {site: <name>, kind: non_finite}]`.
The site trains honestly, then corrupts its update before sending it, so the
coordinator sees a well-formed message with a harmful content (sign_flip, the
classic model-poisoning baseline of e.g. Blanchard et al. 2017) or a broken one
(non_finite: NaN everywhere). Simulation only: a deployed site runs federation/site.py unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from federation.site import Site
from federation.update import ModelUpdate

ATTACKS = ("sign_flip", "non_finite")


class AttackingSite:
    """A Site whose updates are corrupted after honest local training; everything else is the site's own."""

    def __init__(self, site: Site, kind: str, scale: float = 10.0):
        if kind not in ATTACKS:
            raise ValueError(f"site {site.name!r}: unknown attack {kind!r}; known: {ATTACKS}")
        self._site, self.kind, self.scale = site, kind, scale

    def __getattr__(self, name):
        return getattr(self._site, name)

    def train(self, *args, **kwargs) -> ModelUpdate:
        update = self._site.train(*args, **kwargs)
        if self.kind == "sign_flip":
            update.deltas = {k: -self.scale * d for k, d in update.deltas.items()}
        else:
            update.deltas = {k: torch.full_like(d, float("nan")) for k, d in update.deltas.items()}
        return update


def with_attackers(sites: list[Site], attackers: Sequence[dict] | None) -> list:
    """The sites, with the configured ones replaced by attacking wrappers (unknown site names are an error)."""
    by_name = {a["site"]: a for a in attackers or []}
    unknown = set(by_name) - {s.name for s in sites}
    if unknown:
        raise ValueError(f"federation.attackers names sites the consortium lacks: {sorted(unknown)}")
    return [AttackingSite(s, by_name[s.name]["kind"], float(by_name[s.name].get("scale", 10.0))) if s.name in by_name else s for s in sites]
