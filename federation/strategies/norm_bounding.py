"""Norm bounding, then modality-aware FedAvg.

Sun et al. 2019, "Can You Really Backdoor Federated Learning?" (arXiv:1911.07963).
Each site's delta is scaled down to L2 norm at most a bound before the per-key
weighted average, so no single site can move the model further than its share of
the bound.

With `max_norm` set, the bound is fixed and applies to the site's whole delta (the
paper's form). With `max_norm: null` it is taken from the round itself, per
parameter group (the keys sent by the same sites, e.g. one modality's encoder):
the lower median of the group's senders' norms (adaptive clipping at the median,
as in Andrew et al. 2021, "Differentially Private Learning with Adaptive
Clipping", NeurIPS). Per group, because encoders differ in norm by an order of
magnitude, so a whole-update bound either clips every honest site or lets an
attacker's shared keys through; the lower median, because an attacker can inflate
its own norm but, being fewer than half of the senders, not the bound (with two
senders it is the smaller norm). A group one site sent is not bounded.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from federation.robust import clip_to_norm, coordinate_median, norm_over
from federation.strategies.base import Strategy
from federation.strategies.fedavg import FedAvg
from federation.strategies.robust_groups import (
    exclusion_reasons,
    farthest_from,
    senders_per_key,
    unweighted,
)
from federation.update import ModelUpdate


class NormBounding(Strategy):
    def __init__(self, max_norm: float | None = None, n_byzantine: int = 1, suspect_ratio: float | None = 3.0, server_lr: float = 1.0):
        if max_norm is not None and max_norm <= 0:
            raise ValueError(f"max_norm must be positive (or null for the round's per-group median), got {max_norm}")
        if n_byzantine < 0:
            raise ValueError(f"n_byzantine must be >= 0, got {n_byzantine}")
        self.max_norm = max_norm
        self.n_byzantine, self.suspect_ratio = n_byzantine, suspect_ratio
        self.server_lr = server_lr
        self.exclusions: dict[str, str] = {}

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        updates = self.without_suspects(updates)
        if self.max_norm is not None:
            return FedAvg().combine([replace(u, deltas=clip_to_norm(u.deltas, self.max_norm)) for u in updates])
        return FedAvg().combine([replace(u, deltas=d) for u, d in zip(updates, clip_per_group(updates))])

    def without_suspects(self, updates: list[ModelUpdate]) -> list[ModelUpdate]:
        """The updates less the round's outlying suspects, whose exclusion goes to the round's findings."""
        suspects = farthest_from(unweighted(coordinate_median), updates, self.n_byzantine, "coordinate-wise median", self.suspect_ratio)
        left_out = {u.site: len(u.deltas) for u in updates if u.site in suspects}
        self.exclusions = exclusion_reasons(updates, left_out, suspects, "a suspect of this round")
        return [u for u in updates if u.site not in suspects]

    def round_findings(self) -> dict[str, str]:
        return dict(self.exclusions)


def clip_per_group(updates: list[ModelUpdate]) -> list[dict[str, torch.Tensor]]:
    """Each update's deltas, every parameter group scaled to at most the lower median of that group's norms."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for key, sites in senders_per_key(updates).items():
        groups.setdefault(tuple(sites), []).append(key)
    clipped = [dict(u.deltas) for u in updates]
    for sites, keys in groups.items():
        holders = [i for i, u in enumerate(updates) if u.site in sites]
        norms = [norm_over(updates[i].deltas, keys) for i in holders]
        bound = sorted(norms)[(len(norms) - 1) // 2]
        if bound <= 0:
            continue
        for i in holders:
            clipped[i] |= clip_to_norm({k: updates[i].deltas[k] for k in keys}, bound)
    return clipped
