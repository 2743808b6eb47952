"""FedYogi: Yogi on the server, over the sites' mean update.

Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR), Algorithm 2:
v <- v - (1 - beta2) * delta^2 * sign(v - delta^2). v changes additively, so a
few large rounds cannot inflate it as fast as Adam's v.
"""
from __future__ import annotations

import torch

from federation.strategies.fedopt import FedOpt


class FedYogi(FedOpt):
    def next_v(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        return v - (1 - self.beta2) * delta_sq * torch.sign(v - delta_sq)
