"""Start-up checks of the training config: every bound, name and path, before any data is read or file written.

`scripts/train.py` (through `run_experiment`), the membership-inference script, the
Flower scripts and the ServerApp call `check_training_config` first, so a typo fails in one line naming the
setting (exit status 2, federation/entrypoint.py) instead of after every site crashed
in round 1, or never (`federation.rounds=-1` made the local-only baseline train
forever; `federation.local_epochs=0` trained nothing and exited 0; two sites with the
same name silently merged in the summary). The classes that own a setting keep their own
checks (`Participation`, `UpdateValidator`); they are built here once, early, so their
messages come first too.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from modalities.base import ALL_MODALITIES

PRIVACY_KINDS = ("none", "dp_sgd", "site_dp")  # federation/privacy/hooks.py; not imported: this module must load fast
SITE_FOLDERS = "modalities.consortium.load_site_folders"
TABLE_SITES = "modalities.tables.load_table_sites"
FILE_LOADERS = ("modalities.variant_table.load_variant_table", "modalities.image_sites.load_npz_sites")
FOLDER_LOADERS = ("modalities.image_sites.load_image_folder_sites",)
ROOT_LOADERS = ("modalities.phenopacket_store.load_phenopacket_store",)
EVALUATE_ON = ("test", "val")  # the split every evaluation reads (modalities/consortium.py evaluated_on)


class ConfigError(ValueError):
    """A setting or argument refused at start-up: names the setting, its value and the rule."""

    def __init__(self, setting: str, value: Any, rule: str):
        self.setting = setting
        self.value = value
        self.rule = rule
        super().__init__(f"{setting}={_shown(value)}: {rule}")

    def __reduce__(self):
        """Rebuilt from its three fields, so that it crosses a process boundary (a worker pool's result) intact."""
        return type(self), (self.setting, self.value, self.rule)


def _shown(value: Any) -> str:
    """A scalar or path whole; a list or mapping cut short (a site list can be long)."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    text = str(value)
    return text if len(text) <= 80 or not isinstance(value, (list, dict)) else text[:77] + "..."


def check_training_config(cfg: DictConfig, paths: bool = True) -> None:
    """Raise ConfigError on the first setting of the training config that is out of range, repeated, unknown or missing.

    `paths=False` for a Flower coordinator: the sites' data lie on the sites' machines, not its own.
    """
    _check_run(cfg)
    _check_federation(cfg)
    _check_baselines(cfg)
    _check_adaptation(cfg)
    check_privacy(cfg)
    _check_data(cfg, paths)
    from federation.tracking_store import TrackingSettings  # here: it imports this module's ConfigError

    TrackingSettings.from_cfg(cfg.get("tracking") or {})


def whole(cfg: Any, setting: str, minimum: int, allow_none: bool = False) -> int | None:
    """The integer at `setting` (a dotted key under `cfg`), at least `minimum`."""
    value = OmegaConf.select(cfg, setting) if OmegaConf.is_config(cfg) else cfg.get(setting)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(setting, value, f"must be a whole number >= {minimum}" + (" (or null)" if allow_none else ""))
    return value


def number(cfg: Any, setting: str, low: float, high: float = math.inf, low_open: bool = True, allow_none: bool = False) -> float | None:
    """The number at `setting`, in (low, high] (or [low, high] when not `low_open`); .inf is allowed only as `high`."""
    value = OmegaConf.select(cfg, setting) if OmegaConf.is_config(cfg) else cfg.get(setting)
    if value is None and allow_none:
        return None
    bracket = "(" if low_open else "["
    rule = f"must be a number in {bracket}{low:g}, {high:g}]" + (" (or null)" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(setting, value, rule)
    if value < low or (low_open and value == low) or value > high:
        raise ConfigError(setting, value, rule)
    return float(value)


def _check_run(cfg: DictConfig) -> None:
    whole(cfg, "seed", 0)
    if cfg.get("torch_threads") != "auto":
        whole(cfg, "torch_threads", 1, allow_none=True)
    seeds = cfg.get("seeds")
    if seeds is not None:
        values = list(seeds)
        if not values or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in values) or len(set(values)) != len(values):
            raise ConfigError("seeds", seeds, "must be null or a non-empty list of distinct whole numbers >= 0")


def _check_federation(cfg: DictConfig) -> None:
    whole(cfg, "federation.rounds", 0)
    if whole(cfg, "federation.local_steps", 1, allow_none=True) is None:
        whole(cfg, "federation.local_epochs", 1)
    whole(cfg, "federation.concurrent_sites", 1, allow_none=True)
    number(cfg, "federation.participation.fraction", 0.0, 1.0, allow_none=True)
    whole(cfg, "federation.participation.min_sites", 1, allow_none=True)
    number(cfg, "federation.participation.deadline_s", 0.0, allow_none=True)
    whole(cfg, "federation.participation.retries", 0, allow_none=True)
    number(cfg, "federation.validator.max_norm_ratio", 1.0, allow_none=True)
    whole(cfg, "federation.validator.min_cohort", 1, allow_none=True)
    number(cfg, "federation.validator.min_cosine", -1.0, 1.0, low_open=False, allow_none=True)
    from federation.participation import Participation  # here: the governance scripts import ConfigError without torch
    from federation.validation import UpdateValidator

    for name, build in (("participation", Participation), ("validator", UpdateValidator)):
        section = cfg.federation.get(name) or {}
        try:
            build(**OmegaConf.to_container(section, resolve=True))
        except (TypeError, ValueError) as err:  # an unknown key, or a rule the class adds
            raise ConfigError(f"federation.{name}", section, str(err)) from None


def _check_baselines(cfg: DictConfig) -> None:
    baselines = cfg.get("baselines") or {}
    steps = whole(cfg, "baselines.steps", 1, allow_none=True) if "steps" in baselines else None
    epochs = whole(cfg, "baselines.epochs", 1, allow_none=True) if "epochs" in baselines else None
    inherits = steps is None and epochs is None
    if inherits and cfg.federation.rounds == 0 and (baselines.get("local") or baselines.get("pooled")):
        raise ConfigError("federation.rounds", 0, "the local-only and pooled baselines would train nothing: set baselines.epochs or baselines.steps")
    personalisation = cfg.get("personalisation") or {}
    if personalisation.get("enabled"):
        if whole(cfg, "personalisation.steps", 1, allow_none=True) is None:
            whole(cfg, "personalisation.epochs", 1)


def _check_adaptation(cfg: DictConfig) -> None:
    adaptation = cfg.get("adaptation") or {}
    if not adaptation.get("enabled"):
        return
    from federation.adaptation.deploy import CANDIDATES, check_methods, check_mixture, check_selection

    check_methods(adaptation.get("methods"), adaptation.get("report_only"))
    baselines_local = bool((cfg.get("baselines") or {}).get("local", True))
    check_mixture(adaptation.get("methods"), adaptation.get("report_only"), bool(adaptation.get("include_local", True)), baselines_local)
    check_selection(adaptation.get("select_on", "log_loss"), adaptation.get("select") or {})
    whole(cfg, "adaptation.finetune.max_epochs", 1)
    whole(cfg, "adaptation.finetune.patience", 0)
    whole(cfg, "adaptation.calibration.folds", 2)
    number(cfg, "adaptation.calibration.l2", 0.0, low_open=False)
    number(cfg, "adaptation.finetune.proximal_mu", 0.0, low_open=False, allow_none=True)
    whole(cfg, "adaptation.select.min_val", 0)
    whole(cfg, "adaptation.bootstrap_resamples", 1)
    fallback = adaptation.get("select", {}).get("fallback", "federated")
    if fallback not in CANDIDATES:
        raise ConfigError("adaptation.select.fallback", fallback, f"must be one of {list(CANDIDATES)}")


def check_privacy(cfg: DictConfig, section: str = "privacy") -> None:
    privacy = OmegaConf.select(cfg, section)
    if privacy is None:
        return
    kind = privacy.get("kind", "none")
    if kind not in PRIVACY_KINDS:
        raise ConfigError(f"{section}.kind", kind, f"must be one of {', '.join(PRIVACY_KINDS)}")
    if kind == "none":
        return
    number(cfg, f"{section}.epsilon", 0.0)  # .inf: account only
    if number(cfg, f"{section}.delta", 0.0, 1.0) >= 1:
        raise ConfigError(f"{section}.delta", privacy.delta, "must be below 1")
    number(cfg, f"{section}.noise_multiplier", 0.0, allow_none=True)
    for setting in ("max_grad_norm", "clip_norm"):
        if setting in privacy:
            number(cfg, f"{section}.{setting}", 0.0)
    if "sample_rate" in privacy:
        number(cfg, f"{section}.sample_rate", 0.0, 1.0)
    for setting in ("batch_size", "local_epochs"):  # DP-SGD's logical batch and local epochs (null: the federation's)
        if setting in privacy:
            whole(cfg, f"{section}.{setting}", 1, allow_none=True)
    if "lr" in privacy:
        number(cfg, f"{section}.lr", 0.0, allow_none=True)


def _check_data(cfg: DictConfig, paths: bool) -> None:
    data = cfg.data
    whole(cfg, "data.batch_size", 1)
    if data.get("evaluate_on", "test") not in EVALUATE_ON:
        raise ConfigError("data.evaluate_on", data.evaluate_on, f"must be one of {EVALUATE_ON} (val: hyper-parameter search, never test rows)")
    whole(cfg, "data.shards", 1, allow_none=True)
    loader = data.get("loader") or SITE_FOLDERS
    entries = _declared_sites(data)
    if entries is not None:
        _check_sites(entries, loader, data, paths)
    if not paths:
        return
    if loader in FILE_LOADERS + FOLDER_LOADERS:
        if OmegaConf.is_missing(data, "path"):
            raise ConfigError("data.path", "???", "required by this data config: give data.path=...")
        path = data.get("path")
        for each in [path] if isinstance(path, str) else list(path or []):
            existing("data.path", each, folder=loader in FOLDER_LOADERS)
    if loader in ROOT_LOADERS:
        existing("data.root", data.root, folder=True)


def _declared_sites(data: DictConfig) -> list | None:
    if "sites" not in data or data.sites is None:
        return None
    sites = OmegaConf.to_container(data.sites, resolve=True)
    if not isinstance(sites, list) or not sites:
        raise ConfigError("data.sites", data.sites, "must list at least one site (or be null for the data's own sites)")
    return sites


def _check_sites(entries: list, loader: str, data: DictConfig, paths: bool) -> None:
    names = [entry if isinstance(entry, str) else (entry or {}).get("name") for entry in entries]
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip() or name != name.strip() or "/" in name or "\\" in name:
            raise ConfigError(f"data.sites[{i}].name", name, "a site needs a plain name (no path separator, no surrounding spaces)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError("data.sites", repeated, "site names must be unique: each of these names two sites")
    root = Path(data.root) if data.get("root") else Path(".")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        unknown = [m for m in entry.get("modalities") or [] if m not in ALL_MODALITIES]
        if unknown:
            raise ConfigError(f"data.sites[{i}].modalities", unknown, f"unknown modalities; known: {', '.join(ALL_MODALITIES)}")
        if entry.get("path") is None or not paths:
            continue
        if loader == SITE_FOLDERS:
            existing(f"data.sites[{i}].path", entry["path"], folder=True)
        elif loader == TABLE_SITES:
            existing(f"data.sites[{i}].path", root / entry["path"], folder=False)


def existing(setting: str, path: str | Path, folder: bool) -> Path:
    """A path a setting names: it must exist and be a folder, or a regular file (never a pipe, which would block a reader)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(setting, path, "no such " + ("folder" if folder else "file"))
    if folder and not path.is_dir():
        raise ConfigError(setting, path, "not a folder")
    if not folder and not path.is_file():
        raise ConfigError(setting, path, "not a regular file (a folder, named pipe or device)")
    return path

