"""The contract every aggregation strategy fulfils, and checks every update passes first."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

from federation.state import StateDict
from federation.update import ModelUpdate

if TYPE_CHECKING:
    from federation.privacy.secagg import ProtocolSites

log = logging.getLogger(__name__)
NO_UPDATES = "no site sent an update this round; the global model is unchanged"


def check_option(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """A strategy option that takes one of a few words: a typo fails when the strategy is built, naming the choices.

    The readers have the same check (modalities.base); strategies keep their own, as they never import the data layer.
    """
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


class Strategy(ABC):
    """Refuse broken updates, combine the deltas into one per key, apply it to the global model.

    A strategy says how deltas combine (`combine`) and, if it is not a plain step
    of `server_lr`, how they are applied (`apply`, e.g. FedOpt's adaptive step).
    Every other method here is a hook the round loop (federation/round_loop.py)
    calls on every strategy, in both runtimes; the defaults are what a strategy
    without that concern does, so the loop never probes for them.
    """

    server_lr: float = 1.0
    secure_aggregation: bool = False
    """True for strategies under which the coordinator never sees one site's update (governance checks it)."""
    parameter_keys: frozenset[str] | None = None
    """The keys that are trainable parameters (the rest are buffers, e.g. batch-norm statistics); None: unknown."""

    def set_parameter_keys(self, keys) -> None:
        """Told once by the engine, for strategies that treat statistics differently from weights (FedOpt)."""
        self.parameter_keys = frozenset(keys)

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

    def round_findings(self) -> dict[str, str]:
        """Per site, what the last `combine` left out and why (robust rules); the engine records it. Nothing by default."""
        return {}

    def local_objective(self) -> dict:
        """What sites must add to their local training (e.g. FedProx's proximal term); nothing by default."""
        return {}

    def privacy_refusal(self, site: str) -> str | None:
        """Why `site` is not asked to train this round (site-level DP: its budget would overrun), or None."""
        return None

    def privacy_report(self) -> dict[str, dict[str, float]]:
        """Per site, the privacy this strategy has spent so far (site-level DP); nothing by default."""
        return {}

    def secure_weighting(self) -> str:
        """Under secure aggregation, what a site encodes next to each key: 'samples' (its counts) or 'uniform' (1)."""
        return "samples"

    def combine_secure(self, sites: ProtocolSites, round_: int) -> dict[str, torch.Tensor]:
        """The per-key deltas from sites that keep their updates (a deployment under secure aggregation)."""
        raise TypeError(f"{type(self).__name__} does not aggregate through secure aggregation")

    def state_dict(self) -> dict | None:
        """What a deployed coordinator checkpoints between rounds (FedOpt moments, SCAFFOLD's control); None: nothing."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned; a strategy without state has nothing to restore."""


def check_update(update: ModelUpdate, global_state: StateDict) -> None:
    """Refuse updates the global model cannot absorb (see `update_problem`)."""
    problem = update_problem(update, global_state)
    if problem:
        raise ValueError(f"update from site {update.site!r}, round {update.round}: {problem}")


def update_problem(update: ModelUpdate, global_state: StateDict) -> str | None:
    """Why the global model cannot absorb this update (unknown key, wrong shape or dtype, NaN/Inf, no samples), or None."""
    for part, tensors in (("", update.deltas), ("control variate ", update.control_deltas)):
        for key, delta in tensors.items():
            if key not in global_state:
                return f"{part}unknown parameter {key!r}"
            expected = global_state[key]
            if not isinstance(delta, torch.Tensor):
                return f"{part}{key!r} is a {type(delta).__name__}, not a tensor"
            if delta.shape != expected.shape:
                return f"{part}{key!r} has shape {tuple(delta.shape)}, expected {tuple(expected.shape)}"
            if delta.dtype != expected.dtype:
                return f"{part}{key!r} has dtype {delta.dtype}, expected {expected.dtype}"
            if not torch.isfinite(delta).all():
                return f"{part}{key!r} contains NaN or Inf"
    for key in update.deltas:
        if update.sample_counts.get(key, 0) <= 0:
            return f"{key!r} sent without samples"
    return None
