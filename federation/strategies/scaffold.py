"""SCAFFOLD: control variates that correct each site's drift towards its own optimum.

Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning" (ICML), Algorithm 1 with option II. The server keeps a control variate c
and each site its own c_i; local steps follow g - c_i + c (federation/site.py adds
this through models/lit_module.py `set_correction`). A site returns its model
delta and the change of its c_i; the server averages the deltas (FedAvg's
modality-aware weighted mean) and moves c by sum(delta c_i) / N.

Modality-aware: controls exist only for the parameters a site trains, and N for a
key is the number of sites seen training it so far (the consortium's holders of
that modality once each has taken part; with full participation, from round 1).
"""
from __future__ import annotations

import torch

from federation.aggregate import weighted_mean_per_key
from federation.state import StateDict
from federation.strategies.base import Strategy
from federation.update import ModelUpdate


class Scaffold(Strategy):
    def __init__(self, server_lr: float = 1.0):
        self.server_lr = server_lr
        self.control: StateDict = {}
        self.holders: dict[str, set[str]] = {}

    def local_objective(self) -> dict:
        return {"scaffold_control": {k: v.clone() for k, v in self.control.items()}}

    def aggregate(self, global_state: StateDict, updates: list[ModelUpdate]) -> StateDict:
        next_state = super().aggregate(global_state, updates)
        self._move_control(updates)
        return next_state

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        return weighted_mean_per_key((u.deltas, u.sample_counts) for u in updates)

    def _move_control(self, updates: list[ModelUpdate]) -> None:
        sums: dict[str, torch.Tensor] = {}
        for update in updates:
            for key, delta in update.control_deltas.items():
                self.holders.setdefault(key, set()).add(update.site)
                sums[key] = sums[key] + delta if key in sums else delta.clone()
        for key, total in sums.items():
            current = self.control.get(key, torch.zeros_like(total))
            self.control[key] = current + total / len(self.holders[key])

    def state_dict(self) -> dict:
        """Server control and holders, for checkpointing between rounds."""
        return {"control": {k: t.clone() for k, t in self.control.items()}, "holders": {k: sorted(v) for k, v in self.holders.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.control = {k: t.clone() for k, t in state["control"].items()}
        self.holders = {k: set(v) for k, v in state["holders"].items()}
