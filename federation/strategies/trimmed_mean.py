"""Coordinate-wise trimmed mean, modality-aware.

Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates" (ICML). Per parameter and coordinate, over the sites that sent
that parameter, the floor(trim_fraction * n) largest and smallest values are
dropped and the rest averaged, unweighted. With few senders nothing may be trimmed
(one sender: its own delta).
"""
from __future__ import annotations

import torch

from federation.robust import deltas_per_key, trimmed_mean
from federation.strategies.base import Strategy
from federation.update import ModelUpdate


class TrimmedMean(Strategy):
    def __init__(self, trim_fraction: float = 0.2, server_lr: float = 1.0):
        if not 0.0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
        self.trim_fraction = trim_fraction
        self.server_lr = server_lr

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        return {key: trimmed_mean(deltas, self.trim_fraction) for key, deltas in deltas_per_key(updates).items()}
