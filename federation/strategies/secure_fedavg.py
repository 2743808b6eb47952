"""FedAvg computed through secure aggregation: the coordinator sees sums, never one site's update.

McMahan et al. 2017 (FedAvg), aggregated with Bonawitz et al. 2017 (CCS), "Practical
Secure Aggregation for Privacy-Preserving Machine Learning". Per key, the result is
sum(count_i * delta_i) / sum(count_i) over the sites that hold the key, exactly as
FedAvg's, up to the fixed-point precision, with each site's update first clipped
to L2 norm `clip_bound` (so FedAvg's result when no update is longer than that).

In-process the sites' halves of the protocol run here, one SecAggClient per
update, but they talk to the SecAggServer only through protocol messages; in a
Flower deployment each client half runs at its site.
"""
from __future__ import annotations

import torch

from federation.privacy.secagg import (
    Observer,
    SecAggClient,
    SecAggServer,
    run_secure_aggregation,
)
from federation.strategies.base import Strategy
from federation.update import ModelUpdate

WEIGHTINGS = ("samples", "uniform")


class SecureFedAvg(Strategy):
    secure_aggregation = True  # the coordinator only ever sees masked vectors (governance checks this)

    def __init__(
        self,
        server_lr: float = 1.0,
        threshold: int | float = 0.6,
        clip_bound: float = 100.0,
        precision_bits: int = 20,
        max_count: int = 1_000_000,
        min_group_size: int = 2,
        weighting: str = "samples",
    ):
        """`threshold`: t as a site count (int) or a fraction of the round's sites (float), a strict majority.
        `weighting`: 'samples' (FedAvg) or 'uniform' (each holder counts once, as site-level DP needs)."""
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.server_lr = server_lr
        self.weighting = weighting
        self.server_options = dict(threshold=threshold, clip=clip_bound, precision_bits=precision_bits, max_count=max_count, min_group_size=min_group_size)
        self.observe: Observer | None = None
        """Optional hook that sees every message a site sends (for egress checks and audits)."""
        self.clipped: list[str] = []
        """Sites whose update was longer than clip_bound in the last round."""

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        clients = [SecAggClient(u.site, u.deltas, self._weights(u)) for u in updates]
        result = run_secure_aggregation(clients, SecAggServer(**self.server_options), updates[0].round, observe=self.observe)
        self.clipped = [c.site for c in clients if c.clipped]
        return result.means()

    def _weights(self, update: ModelUpdate) -> dict[str, int]:
        if self.weighting == "uniform":
            return {k: 1 for k in update.deltas}
        return dict(update.sample_counts)
