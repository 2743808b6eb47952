"""Norm bounding, then modality-aware FedAvg.

Sun et al. 2019, "Can You Really Backdoor Federated Learning?" (arXiv:1911.07963).
Each site's whole delta is scaled down to L2 norm at most max_norm before the
per-key weighted average, so no single site can move the model further than its
share of the bound.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from federation.robust import clip_to_norm
from federation.state import StateDict
from federation.strategies.base import Strategy, check_update
from federation.strategies.fedavg import NO_UPDATES, FedAvg
from federation.update import ModelUpdate

log = logging.getLogger(__name__)


class NormBounding(Strategy):
    def __init__(self, max_norm: float = 1.0, server_lr: float = 1.0):
        if max_norm <= 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm = max_norm
        self.fedavg = FedAvg(server_lr)

    def aggregate(self, global_state: StateDict, updates: list[ModelUpdate]) -> StateDict:
        if not updates:
            log.warning(NO_UPDATES)
            return dict(global_state)
        for update in updates:
            check_update(update, global_state)
        clipped = [replace(u, deltas=clip_to_norm(u.deltas, self.max_norm)) for u in updates]
        return self.fedavg.aggregate(global_state, clipped)
