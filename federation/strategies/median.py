"""Coordinate-wise median, modality-aware.

Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates" (ICML). Each parameter takes the coordinate-wise median of the
deltas of the sites that sent it, less the round's outlying suspects (the f sites
farthest from the median on the keys every site sent; see robust_groups.py). A
key one honest site sent takes that site's delta.

Unweighted by default, as in the paper: sample counts are each site's own word,
and one inflated count would carry a weighted median. With `weighted: true` each
site weighs by its sample count for the key (a weighted median), which a consortium
can choose where counts are vouched for: on the synthetic consortium the
unweighted median gives the 32-patient site as much say as the 155-patient one and
costs 0.885 -> 0.810 without any attacker, the weighted one 0.875.
"""
from __future__ import annotations

import torch

from federation.robust import coordinate_median, weighted_coordinate_median
from federation.strategies.base import Strategy, check_option
from federation.strategies.robust_groups import (
    SCOPES,
    combine_without_suspects,
    farthest_from,
)
from federation.update import ModelUpdate


class Median(Strategy):
    def __init__(
        self,
        n_byzantine: int = 1,
        suspect_ratio: float | None = 3.0,
        exclude_suspects: str = "all_keys",
        weighted: bool = False,
        server_lr: float = 1.0,
    ):
        if n_byzantine < 0:
            raise ValueError(f"n_byzantine must be >= 0, got {n_byzantine}")
        check_option("exclude_suspects", exclude_suspects, SCOPES)
        self.n_byzantine, self.suspect_ratio, self.exclude_suspects = n_byzantine, suspect_ratio, exclude_suspects
        self.weighted = weighted
        self.server_lr = server_lr
        self.exclusions: dict[str, str] = {}

    def median(self, tensors: list[torch.Tensor], counts: list[float]) -> torch.Tensor:
        return weighted_coordinate_median(tensors, counts) if self.weighted else coordinate_median(tensors)

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        what = "weighted coordinate-wise median" if self.weighted else "coordinate-wise median"
        suspects = farthest_from(self.median, updates, self.n_byzantine, what, self.suspect_ratio)
        combined, self.exclusions = combine_without_suspects(updates, self.median, self.n_byzantine, suspects, self.exclude_suspects)
        return combined

    def round_findings(self) -> dict[str, str]:
        return dict(self.exclusions)
