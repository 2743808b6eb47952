"""Coordinate-wise median, modality-aware.

Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates" (ICML). Each parameter takes the coordinate-wise median of the
deltas of the sites that sent it; sample counts are not used, as an attacker could
inflate them. A key sent by one site takes that site's delta.
"""
from __future__ import annotations

import logging

from federation.robust import coordinate_median, deltas_per_key
from federation.state import StateDict
from federation.strategies.base import Strategy, check_update
from federation.strategies.fedavg import NO_UPDATES
from federation.update import ModelUpdate

log = logging.getLogger(__name__)


class Median(Strategy):
    def __init__(self, server_lr: float = 1.0):
        self.server_lr = server_lr

    def aggregate(self, global_state: StateDict, updates: list[ModelUpdate]) -> StateDict:
        if not updates:
            log.warning(NO_UPDATES)
            return dict(global_state)
        for update in updates:
            check_update(update, global_state)
        next_state = dict(global_state)
        for key, deltas in deltas_per_key(updates).items():
            delta = coordinate_median(deltas).to(global_state[key].dtype)
            next_state[key] = global_state[key] + self.server_lr * delta
        return next_state
