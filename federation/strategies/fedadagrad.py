"""FedAdagrad: Adagrad on the server, over the sites' mean update.

Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR), Algorithm 2:
v <- v + delta^2. There is no beta2: v only grows, so steps shrink over rounds.
"""
from __future__ import annotations

import torch

from federation.strategies.fedopt import FedOpt


class FedAdagrad(FedOpt):
    def __init__(self, eta: float = 1e-2, tau: float = 1e-3, beta1: float = 0.9):
        super().__init__(eta=eta, tau=tau, beta1=beta1)

    def next_v(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        return v + delta_sq
