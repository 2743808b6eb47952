"""The contract every aggregation strategy fulfils, and checks every update passes first."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from federation.state import StateDict
from federation.update import ModelUpdate


class Strategy(ABC):
    @abstractmethod
    def aggregate(self, global_state: StateDict, updates: list[ModelUpdate]) -> StateDict:
        """Return the next global state (same keys as `global_state`)."""

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
