"""Where a run's governance files live, and the governance config a finished run used.

The ledger, the registry and the dashboard sit in the run folder unless the config
gives an absolute path (a consortium that keeps one ledger and one registry across
runs). The scripts that act on a finished run (rollback, dashboard) read the
governance section of its `config.yaml`, else the default agreement.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "governance" / "default.yaml"
RUN_CONFIG = "config.yaml"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.csv"


def governance_of(run_dir: str | Path) -> DictConfig:
    """The `governance` section of the run's config.yaml, or the default agreement if it has none."""
    config = Path(run_dir) / RUN_CONFIG
    if config.is_file():
        section = OmegaConf.load(config).get("governance")
        if section is not None:
            return section
    return OmegaConf.load(DEFAULT_CONFIG)


def _under(run_dir: str | Path, path: str) -> Path:
    path = Path(path)
    return path if path.is_absolute() else Path(run_dir) / path


def ledger_path(governance_cfg: Any, run_dir: str | Path) -> Path:
    return _under(run_dir, governance_cfg.ledger.path)


def registry_dir(governance_cfg: Any, run_dir: str | Path) -> Path:
    return _under(run_dir, governance_cfg.registry.dir)


def dashboard_path(governance_cfg: Any, run_dir: str | Path) -> Path:
    return _under(run_dir, governance_cfg.dashboard.file)
