"""Restoring a registry version as a run's current model, on the record.

The version's file is checked against its card first (a changed file is refused),
then written into the run's `model.safetensors` (the file `scripts/predict.py`
reads), over the tensors that never travel (frozen encoders), keeping the file's
label metadata; the registry's current version moves, and the ledger records it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file

from federation.governance.layout import (
    MODEL_FILE,
    governance_of,
    ledger_path,
    registry_dir,
)
from federation.governance.ledger import ROLLBACK, Ledger
from federation.governance.registry import MODEL, Registry
from federation.outputs import write_model
from federation.state import StateDict


def install_model(run_dir: str | Path, state: StateDict, source: Path) -> Path:
    """Write `state` as the run's model: over the existing file's other tensors and with its metadata, if there is one."""
    target = Path(run_dir) / MODEL_FILE
    base = target if target.is_file() else source
    with safe_open(str(base), framework="pt") as handle:
        metadata = handle.metadata() or {}
    full = load_file(str(target)) if target.is_file() else {}
    write_model(target, {**full, **state}, metadata)
    return target


def rollback(run_dir: str | Path, version: int, reason: str = "", governance_cfg: Any = None) -> dict[str, Any]:
    """Make `version` the run's current model; returns the ledger entry. The ledger must exist and verify."""
    cfg = governance_cfg if governance_cfg is not None else governance_of(run_dir)
    ledger = Ledger(ledger_path(cfg, run_dir), must_exist=True)
    registry = Registry(registry_dir(cfg, run_dir))
    previous = registry.current()
    state = registry.load(version)
    install_model(run_dir, state, registry.path(version) / MODEL)
    registry.set_current(version)
    card = registry.card(version)
    return ledger.append(ROLLBACK, {"version": version, "from_version": previous, "model": card["model_hash"], "reason": reason or "requested"})
