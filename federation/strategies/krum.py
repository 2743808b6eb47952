"""Multi-Krum, then modality-aware FedAvg over the selected sites.

Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent" (NeurIPS). Each update is scored by the summed squared distance
to its n - f - 2 nearest neighbours, computed over the keys that every update
shares (sites with different modalities still compare on fusion and head); the
n_selected lowest-scoring sites are kept (n_selected=1 is Krum) and averaged per
key as in FedAvg. Krum's guarantee needs n > 2f + 2 sites.
"""
from __future__ import annotations

import logging

import torch

from federation.robust import flatten, krum_scores, multi_krum_select, shared_keys
from federation.strategies.base import Strategy
from federation.strategies.fedavg import FedAvg
from federation.update import ModelUpdate

log = logging.getLogger(__name__)
TOO_FEW_SITES = "Krum with %d sites and f=%d: its guarantee needs more than 2f + 2 sites"


class MultiKrum(Strategy):
    def __init__(self, n_byzantine: int = 1, n_selected: int = 1, server_lr: float = 1.0):
        if n_byzantine < 0 or n_selected < 1:
            raise ValueError(f"need n_byzantine >= 0 and n_selected >= 1, got {n_byzantine}, {n_selected}")
        self.n_byzantine = n_byzantine
        self.n_selected = n_selected
        self.server_lr = server_lr

    def select(self, updates: list[ModelUpdate]) -> list[ModelUpdate]:
        """The n_selected updates with the lowest Krum scores, in their original order."""
        if len(updates) <= 2 * self.n_byzantine + 2:
            log.warning(TOO_FEW_SITES, len(updates), self.n_byzantine)
        keys = shared_keys(updates)
        if not keys:
            raise ValueError("Krum needs at least one parameter that every site sent; these updates share none")
        scores = krum_scores([flatten(u.deltas, keys) for u in updates], self.n_byzantine)
        return [updates[i] for i in multi_krum_select(scores, self.n_selected)]

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        return FedAvg().combine(self.select(updates))
