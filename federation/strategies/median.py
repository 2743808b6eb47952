"""Coordinate-wise median, modality-aware.

Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates" (ICML). Each parameter takes the coordinate-wise median of the
deltas of the sites that sent it; sample counts are not used, as an attacker could
inflate them. A key sent by one site takes that site's delta.
"""
from __future__ import annotations

import torch

from federation.robust import coordinate_median, deltas_per_key
from federation.strategies.base import Strategy
from federation.update import ModelUpdate


class Median(Strategy):
    def __init__(self, server_lr: float = 1.0):
        self.server_lr = server_lr

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        return {key: coordinate_median(deltas) for key, deltas in deltas_per_key(updates).items()}
