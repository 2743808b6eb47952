"""FedAvg, modality-aware.

McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data" (AISTATS). Each parameter is averaged over the sites that
sent it, weighted by the samples that informed it at each site.
"""
from __future__ import annotations

import torch

from federation.aggregate import weighted_mean_per_key
from federation.strategies.base import Strategy
from federation.update import ModelUpdate


class FedAvg(Strategy):
    def __init__(self, server_lr: float = 1.0):
        self.server_lr = server_lr

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        return weighted_mean_per_key((u.deltas, u.sample_counts) for u in updates)
