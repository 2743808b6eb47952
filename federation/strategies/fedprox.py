"""FedProx: FedAvg's aggregation, with a proximal term in each site's local loss.

Li et al. 2020, "Federated Optimization in Heterogeneous Networks" (MLSys). Each
site minimises its loss plus (mu/2)·||w - w_global||² over the trainable
parameters, which keeps local models near the global one when sites' data differ.
The server side is unchanged: updates are averaged as in FedAvg.
"""
from __future__ import annotations

from federation.strategies.fedavg import FedAvg


class FedProx(FedAvg):
    def __init__(self, mu: float = 0.01, server_lr: float = 1.0):
        if mu < 0:
            raise ValueError(f"FedProx mu must be >= 0, got {mu}")
        super().__init__(server_lr)
        self.mu = mu

    def local_objective(self) -> dict:
        """What each site adds to its local training (read by the engine, applied by `Site.train`)."""
        return {"proximal_mu": self.mu}
