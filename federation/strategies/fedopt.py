"""FedOpt: adaptive server optimisers on the sites' mean update.

Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR), Algorithm 2. The
modality-aware weighted mean of the sites' deltas is a pseudo-gradient; the
server keeps per-key moments m and v and steps
x <- x + eta * m / (sqrt(v) + tau). Subclasses differ only in how v moves.
Keys no site sent this round are left as they are, moments included: a
modality absent from a round neither moves nor decays. Buffers (batch-norm
running statistics) are not weights to optimise: they take the plain mean, since
an adaptive step of about eta in each coordinate's sign can drive a running
variance negative.
"""
from __future__ import annotations

from abc import abstractmethod

import torch

from federation.aggregate import weighted_mean_per_key
from federation.state import StateDict
from federation.strategies.base import Strategy
from federation.update import ModelUpdate


class FedOpt(Strategy):
    def __init__(self, eta: float = 1e-2, tau: float = 1e-3, beta1: float = 0.9, beta2: float = 0.99):
        self.eta, self.tau, self.beta1, self.beta2 = eta, tau, beta1, beta2
        self.m: StateDict = {}
        self.v: StateDict = {}

    @abstractmethod
    def next_v(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        """The second moment after seeing this round's squared pseudo-gradient."""

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        """The pseudo-gradient: FedAvg's modality-aware mean delta."""
        return weighted_mean_per_key((u.deltas, u.sample_counts) for u in updates)

    def apply(self, global_state: StateDict, pseudo_gradient: dict[str, torch.Tensor]) -> StateDict:
        """The adaptive server step, only for keys some site sent (others keep value and moments)."""
        next_state = dict(global_state)
        for key, delta in pseudo_gradient.items():
            x = global_state[key]
            delta = delta.to(x.dtype)
            if self.parameter_keys is not None and key not in self.parameter_keys:
                next_state[key] = x + delta  # a statistic (batch-norm running mean/var) is averaged, not optimised
                continue
            # v starts at tau^2, as the paper requires (v_{-1} >= tau^2)
            m = self.m.get(key, torch.zeros_like(x))
            v = self.v.get(key, torch.full_like(x, self.tau**2))
            self.m[key] = self.beta1 * m + (1 - self.beta1) * delta
            self.v[key] = self.next_v(v, delta * delta)
            next_state[key] = x + self.eta * self.m[key] / (self.v[key].sqrt() + self.tau)
        return next_state

    def state_dict(self) -> dict[str, StateDict]:
        """The server moments, for checkpointing between rounds."""
        return {"m": {k: t.clone() for k, t in self.m.items()}, "v": {k: t.clone() for k, t in self.v.items()}}

    def load_state_dict(self, state: dict[str, StateDict]) -> None:
        self.m = {k: t.clone() for k, t in state["m"].items()}
        self.v = {k: t.clone() for k, t in state["v"].items()}
