"""Coordinate-wise trimmed mean, modality-aware.

Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates" (ICML). Per parameter and coordinate, over the n sites that sent
that parameter, the k largest and smallest values are dropped and the rest averaged,
unweighted: k = floor(trim_fraction * n), but at least f (the paper's beta >= f/n),
so that f attackers are trimmed among as few as 2f + 1 senders. The round's
outlying suspects (the f sites farthest from the trimmed mean on the keys every
site sent; see robust_groups.py) are left out first, and at least f are still
trimmed from what is left: a suspect may be an honest outlier and the attacker
another site. A key one honest site sent takes that site's delta.
"""
from __future__ import annotations

import torch

from federation.robust import trimmed_mean
from federation.strategies.base import Strategy, check_option
from federation.strategies.robust_groups import (
    SCOPES,
    combine_without_suspects,
    farthest_from,
)
from federation.update import ModelUpdate


class TrimmedMean(Strategy):
    def __init__(
        self,
        trim_fraction: float = 0.2,
        n_byzantine: int = 1,
        suspect_ratio: float | None = 3.0,
        exclude_suspects: str = "all_keys",
        server_lr: float = 1.0,
    ):
        if not 0.0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
        if n_byzantine < 0:
            raise ValueError(f"n_byzantine must be >= 0, got {n_byzantine}")
        check_option("exclude_suspects", exclude_suspects, SCOPES)
        self.trim_fraction = trim_fraction
        self.n_byzantine, self.suspect_ratio, self.exclude_suspects = n_byzantine, suspect_ratio, exclude_suspects
        self.server_lr = server_lr
        self.exclusions: dict[str, str] = {}

    def trim(self, tensors: list[torch.Tensor], counts: list[float] | None = None) -> torch.Tensor:
        """Coordinate-wise mean after dropping max(floor(trim_fraction * n), f) from each end (never all of them)."""
        return trimmed_mean(tensors, self.trim_fraction, at_least=self.n_byzantine)

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        suspects = farthest_from(self.trim, updates, self.n_byzantine, "trimmed mean", self.suspect_ratio)
        combined, self.exclusions = combine_without_suspects(updates, self.trim, self.n_byzantine, suspects, self.exclude_suspects)
        return combined

    def round_findings(self) -> dict[str, str]:
        return dict(self.exclusions)
