"""The contract every aggregation strategy fulfils, and checks every update passes first."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import torch

from federation.state import StateDict
from federation.update import ModelUpdate

log = logging.getLogger(__name__)
NO_UPDATES = "no site sent an update this round; the global model is unchanged"


class Strategy(ABC):
    """Refuse broken updates, combine the deltas into one per key, apply it to the global model.

    A strategy says how deltas combine (`combine`) and, if it is not a plain step
    of `server_lr`, how they are applied (`apply`, e.g. FedOpt's adaptive step).
    """

    server_lr: float = 1.0

    def aggregate(self, global_state: StateDict, updates: list[ModelUpdate]) -> StateDict:
        """The next global state (same keys as `global_state`); keys no site sent are unchanged."""
        if not updates:
            log.warning(NO_UPDATES)
            return dict(global_state)
        for update in updates:
            check_update(update, global_state)
        return self.apply(global_state, self.combine(updates))

    @abstractmethod
    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        """One delta per parameter key, over only the updates that sent that key."""

    def apply(self, global_state: StateDict, deltas: dict[str, torch.Tensor]) -> StateDict:
        next_state = dict(global_state)
        for key, delta in deltas.items():
            next_state[key] = global_state[key] + self.server_lr * delta.to(global_state[key].dtype)
        return next_state

    def local_objective(self) -> dict:
        """What sites must add to their local training (e.g. FedProx's proximal term); nothing by default."""
        return {}


def check_update(update: ModelUpdate, global_state: StateDict) -> None:
    """Refuse updates the global model cannot absorb: unknown keys, wrong shapes, non-finite values."""
    for key, delta in update.deltas.items():
        if key not in global_state:
            raise ValueError(f"update from site {update.site!r}, round {update.round}: unknown parameter {key!r}")
        if delta.shape != global_state[key].shape:
            raise ValueError(
                f"update from site {update.site!r}, round {update.round}: {key!r} has shape {tuple(delta.shape)}, "
                f"expected {tuple(global_state[key].shape)}"
            )
        if not torch.isfinite(delta).all():
            raise ValueError(f"update from site {update.site!r}, round {update.round}: {key!r} contains NaN or Inf")
        if update.sample_counts.get(key, 0) <= 0:
            raise ValueError(f"update from site {update.site!r}, round {update.round}: {key!r} sent without samples")
