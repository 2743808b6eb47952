"""FedAvg, modality-aware.

McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data" (AISTATS). Each parameter is averaged over the sites that
sent it, weighted by the samples that informed it at each site.
"""
from __future__ import annotations

import logging

from federation.aggregate import weighted_mean_per_key
from federation.state import StateDict
from federation.strategies.base import Strategy, check_update
from federation.update import ModelUpdate

log = logging.getLogger(__name__)
NO_UPDATES = "no site sent an update this round; the global model is unchanged"


class FedAvg(Strategy):
    def __init__(self, server_lr: float = 1.0):
        self.server_lr = server_lr

    def aggregate(self, global_state: StateDict, updates: list[ModelUpdate]) -> StateDict:
        if not updates:
            log.warning(NO_UPDATES)
            return dict(global_state)
        for update in updates:
            check_update(update, global_state)
        mean_delta = weighted_mean_per_key((u.deltas, u.sample_counts) for u in updates)
        next_state = dict(global_state)
        for key, delta in mean_delta.items():
            next_state[key] = global_state[key] + self.server_lr * delta.to(global_state[key].dtype)
        return next_state
