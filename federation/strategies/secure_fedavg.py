"""FedAvg computed through secure aggregation: the coordinator sees sums, never one site's update.

McMahan et al. 2017 (FedAvg), aggregated with Bonawitz et al. 2017 (CCS), "Practical
Secure Aggregation for Privacy-Preserving Machine Learning". Per key, the result is
sum(count_i * delta_i) / sum(count_i) over the sites that hold the key, exactly as
FedAvg's, up to the fixed-point precision, with each site's update first clipped
to L2 norm `clip_bound` (so FedAvg's result when no update is longer than that).

In-process the sites' halves of the protocol run here, one SecAggClient per
update, but they talk to the SecAggServer only through protocol messages; in a
Flower deployment each client half runs at its site and the coordinator calls
`combine_secure` with the sites at the far end of Flower messages (the same
`secure_sum`, federation/flower/secagg.py).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from federation.privacy.secagg import (
    LocalSites,
    Observer,
    ProtocolSites,
    SecAggClient,
    SecAggServer,
    SecureSum,
    secure_sum,
)
from federation.strategies.base import Strategy, check_option
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
        check_option("weighting", weighting, WEIGHTINGS)
        self.server_lr = server_lr
        self.weighting = weighting
        self.server_options = dict(threshold=threshold, clip=clip_bound, precision_bits=precision_bits, max_count=max_count, min_group_size=min_group_size)
        self.observe: Observer | None = None
        """Optional hook that sees every message a site sends (for egress checks and audits)."""
        self.clipped: list[str] = []
        """Sites whose update was longer than clip_bound in the last round."""

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        clients = [SecAggClient(u.site, u.deltas, site_weights(u.sample_counts, self.weighting)) for u in updates]
        result = self.secure_sum(LocalSites(clients, observe=self.observe), updates[0].round)
        self.clipped = [c.site for c in clients if c.clipped]
        return result.means()

    def combine_secure(self, sites: ProtocolSites, round_: int) -> dict[str, torch.Tensor]:
        """The per-key means from sites that hold their own updates (a deployment): they never reach this process."""
        return self.secure_sum(sites, round_).means()

    def secure_weighting(self) -> str:
        return self.weighting

    def secure_sum(self, sites: ProtocolSites, round_: int, clip: float | None = None) -> SecureSum:
        """The protocol over `sites`; `clip`: a tighter L2 bound for the sites to clip to (site-level DP's clip_norm)."""
        options = dict(self.server_options)
        if clip is not None:
            options["clip"] = min(float(clip), float(options["clip"]))
        return secure_sum(sites, SecAggServer(**options), round_)


def site_weights(sample_counts: Mapping[str, int], weighting: str) -> dict[str, int]:
    """What a site encodes next to each key: its sample count (FedAvg) or 1 (every holder once)."""
    check_option("weighting", weighting, WEIGHTINGS)  # also at the site: the weighting arrives in a message
    return {k: 1 for k in sample_counts} if weighting == "uniform" else {k: int(c) for k, c in sample_counts.items()}
