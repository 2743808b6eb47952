"""The coordinator's state after every completed round, written atomically, so a crash costs one round at most.

A coordinator killed mid-run (power cut, `kill -9`) restarts from the last
completed round: the global model, the strategy's own state (FedOpt moments,
SCAFFOLD's server control, through `state_dict()`/`load_state_dict()`), the
round number, the history so far and the RNG states. Sites are stateless between
rounds from the coordinator's point of view, and their seeds depend only on the
round and their index, so the resumed run ends where an uninterrupted one would.
A checkpoint belongs to one consortium and config: resuming with another is refused.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from federation.outputs import write_atomic
from federation.state import StateDict


@dataclass
class CoordinatorState:
    round: int
    """The last completed round (0: none yet)."""
    global_state: StateDict
    strategy_state: dict | None = None
    history: list[dict] = field(default_factory=list)
    """metrics.csv rows so far (one per round and site)."""
    rounds: list[dict] = field(default_factory=list)
    """One summary per completed round: decision, each site's status and reason, bytes moved."""
    rng: dict = field(default_factory=dict)
    fingerprint: str = ""
    """The consortium plan and config this state belongs to."""


class CheckpointStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    def save(self, state: CoordinatorState) -> None:
        state.rng = capture_rng()
        write_atomic(self.path, lambda p: torch.save(asdict(state), p))

    def load(self, fingerprint: str) -> CoordinatorState | None:
        """The saved state, its RNG states restored; None when there is none yet."""
        if not self.path.exists():
            return None
        state = CoordinatorState(**torch.load(self.path, weights_only=True))
        if state.fingerprint != fingerprint:
            raise ValueError(
                f"{self.path} was written for another consortium or config ({state.fingerprint}, this run: {fingerprint}); "
                "resume with the config that wrote it, or give this run another deploy.run_dir"
            )
        restore_rng(state.rng)
        return state


def capture_rng() -> dict:
    """Python, NumPy and torch RNG states, as tensors and lists (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": _to_lists(random.getstate()),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }


def restore_rng(rng: dict) -> None:
    if not rng:
        return
    random.setstate(_to_tuples(rng["python"]))
    np_state = rng["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state((np_state["name"], keys, np_state["pos"], np_state["has_gauss"], np_state["cached"]))
    torch.set_rng_state(rng["torch"])


def _to_lists(value):
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _to_tuples(value):
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value
