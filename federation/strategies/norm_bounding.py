"""Norm bounding, then modality-aware FedAvg.

Sun et al. 2019, "Can You Really Backdoor Federated Learning?" (arXiv:1911.07963).
Each site's whole delta is scaled down to L2 norm at most max_norm before the
per-key weighted average, so no single site can move the model further than its
share of the bound.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from federation.robust import clip_to_norm
from federation.strategies.base import Strategy
from federation.strategies.fedavg import FedAvg
from federation.update import ModelUpdate


class NormBounding(Strategy):
    def __init__(self, max_norm: float = 1.0, server_lr: float = 1.0):
        if max_norm <= 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm = max_norm
        self.server_lr = server_lr

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        return FedAvg().combine([replace(u, deltas=clip_to_norm(u.deltas, self.max_norm)) for u in updates])
