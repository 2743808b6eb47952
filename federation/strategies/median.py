"""Coordinate-wise median, modality-aware.

Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates" (ICML). Each parameter takes the coordinate-wise median of the
deltas of the sites that sent it; sample counts are not used, as an attacker could
inflate them. A median outvotes f attackers only among 2f + 1 senders: a key fewer
sites sent leaves out the round's suspects (the f sites farthest from the median
on the keys every site sent; see robust_groups.py). A key one honest site sent
takes that site's delta.
"""
from __future__ import annotations

import torch

from federation.robust import coordinate_median
from federation.strategies.base import Strategy
from federation.strategies.robust_groups import combine_with_thin_keys, farthest_from
from federation.update import ModelUpdate


class Median(Strategy):
    def __init__(self, n_byzantine: int = 1, suspect_ratio: float | None = 3.0, server_lr: float = 1.0):
        if n_byzantine < 0:
            raise ValueError(f"n_byzantine must be >= 0, got {n_byzantine}")
        self.n_byzantine, self.suspect_ratio = n_byzantine, suspect_ratio
        self.server_lr = server_lr
        self.exclusions: dict[str, str] = {}

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        suspects = farthest_from(coordinate_median, updates, self.n_byzantine, "coordinate-wise median", self.suspect_ratio)
        combined, self.exclusions = combine_with_thin_keys(updates, coordinate_median, self.n_byzantine, suspects)
        return combined

    def round_findings(self) -> dict[str, str]:
        return dict(self.exclusions)
