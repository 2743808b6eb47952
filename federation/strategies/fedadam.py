"""FedAdam: Adam on the server, over the sites' mean update.

Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR), Algorithm 2:
v <- beta2 * v + (1 - beta2) * delta^2 (no bias correction, as in the paper).
"""
from __future__ import annotations

import torch

from federation.strategies.fedopt import FedOpt


class FedAdam(FedOpt):
    def next_v(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        return self.beta2 * v + (1 - self.beta2) * delta_sq
