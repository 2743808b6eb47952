"""Coordinate-wise trimmed mean, modality-aware.

Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates" (ICML). Per parameter and coordinate, over the sites that sent
that parameter, the floor(trim_fraction * n) largest and smallest values are
dropped and the rest averaged, unweighted. With few senders nothing may be trimmed
(one sender: its own delta).
"""
from __future__ import annotations

import logging

from federation.robust import deltas_per_key, trimmed_mean
from federation.state import StateDict
from federation.strategies.base import Strategy, check_update
from federation.strategies.fedavg import NO_UPDATES
from federation.update import ModelUpdate

log = logging.getLogger(__name__)


class TrimmedMean(Strategy):
    def __init__(self, trim_fraction: float = 0.2, server_lr: float = 1.0):
        if not 0.0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
        self.trim_fraction = trim_fraction
        self.server_lr = server_lr

    def aggregate(self, global_state: StateDict, updates: list[ModelUpdate]) -> StateDict:
        if not updates:
            log.warning(NO_UPDATES)
            return dict(global_state)
        for update in updates:
            check_update(update, global_state)
        next_state = dict(global_state)
        for key, deltas in deltas_per_key(updates).items():
            delta = trimmed_mean(deltas, self.trim_fraction).to(global_state[key].dtype)
            next_state[key] = global_state[key] + self.server_lr * delta
        return next_state
