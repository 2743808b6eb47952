"""Restoring a registry version as a run's current model, on the record.

Every check comes before the first write (`prepare_rollback`): the run folder exists, the
ledger verifies, the version exists and its file is checked against its card (a changed
file is refused), and the run's model file reads. Then the version is
written into the run's `model.safetensors` (the file `scripts/predict.py`
reads), over the tensors that never travel (frozen encoders), keeping the file's
label metadata; the registry's current version moves, and the ledger records it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from federation.governance.layout import (
    MODEL_FILE,
    governance_of,
    ledger_path,
    registry_dir,
)
from federation.governance.ledger import ROLLBACK, Ledger
from federation.governance.registry import MODEL, Registry
from federation.outputs import model_metadata, read_model, write_model
from federation.settings import ConfigError
from federation.state import StateDict


def install_model(run_dir: str | Path, state: StateDict, source: Path) -> Path:
    """Write `state` as the run's model: over the existing file's other tensors and with its metadata, if there is one."""
    target = Path(run_dir) / MODEL_FILE
    metadata = model_metadata(target if target.exists() else source)
    full = read_model(target) if target.exists() else {}
    write_model(target, {**full, **state}, metadata)
    return target


def check_run_dir(run_dir: str | Path) -> Path:
    """The run folder a governance script acts on: it must exist before its ledger or model is looked for."""
    if not Path(run_dir).is_dir():
        raise ConfigError("run_dir", run_dir, "no such run folder")
    return Path(run_dir)


def prepare_rollback(run_dir: str | Path, version: int, cfg: Any) -> tuple[Ledger, Registry, StateDict]:
    """Everything a rollback checks before it writes: the ledger verifies, the version exists and matches its card, the run's model reads."""
    ledger = Ledger(ledger_path(cfg, run_dir), must_exist=True)
    registry = Registry(registry_dir(cfg, run_dir))
    if version not in registry.versions():
        raise ConfigError("version", version, f"no such version in {registry.root} (versions: {registry.versions() or 'none'})")
    state = registry.load(version)
    target = Path(run_dir) / MODEL_FILE
    model_metadata(target if target.exists() else registry.path(version) / MODEL)
    return ledger, registry, state


def rollback(run_dir: str | Path, version: int, reason: str = "", governance_cfg: Any = None) -> dict[str, Any]:
    """Make `version` the run's current model; returns the ledger entry. The ledger must exist and verify."""
    cfg = governance_cfg if governance_cfg is not None else governance_of(check_run_dir(run_dir))
    ledger, registry, state = prepare_rollback(run_dir, version, cfg)
    previous = registry.current()
    install_model(run_dir, state, registry.path(version) / MODEL)
    registry.set_current(version)
    card = registry.card(version)
    return ledger.append(ROLLBACK, {"version": version, "from_version": previous, "model": card["model_hash"], "reason": reason or "requested"})
