"""Where a run's tracking goes: the settings (`conf/tracking/`), the MLflow store, and a sweep's parent run.

A configured server that cannot be reached must never cost a researcher the run:
it is probed once with a short timeout, and the run logs to the local SQLite store
instead, saying so in one line. SQLite is MLflow's default backend since 3.7 (its
file store is deprecated and refused by 3.x unless opted in), needs no server, and
keeps every run of an `outputs/` folder in one file that `mlflow ui` opens.

MLflow is imported only here and in federation/tracking.py, inside functions: a run
with tracking off never pays its import (about 1.5 s).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from omegaconf import OmegaConf

from federation.entrypoint import one_line
from federation.settings import ConfigError

log = logging.getLogger(__name__)

URI_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")
SWEEP_KEY = "rarefed.sweep_key"  # tag of a sweep's parent run: a hash of the sweep folder
SWEEP_DIR = "rarefed.sweep_dir"


@dataclass(frozen=True)
class TrackingSettings:
    """`conf/tracking/*.yaml`, checked; `tracking=off` gives only `enabled: false`, the rest stays at these defaults."""

    enabled: bool = False
    uri: str | None = None
    local_store: str = "outputs/mlflow.db"
    artifacts: str = "outputs/mlartifacts"
    experiment: str = "rarefed"
    connect_timeout_s: float = 3.0
    log_model: bool = False
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_cfg(cls, section: Any) -> TrackingSettings:
        """The settings, or ConfigError naming the first one that is unknown or out of range (before anything runs)."""
        values = OmegaConf.to_container(section, resolve=True) if OmegaConf.is_config(section) else dict(section or {})
        try:
            settings = cls(**values)
        except TypeError as error:  # an unknown key: a typo such as tracking.urii
            raise ConfigError("tracking", sorted(values), f"unknown setting ({error})") from None
        settings.check()
        return settings

    def check(self) -> None:
        for name in ("enabled", "log_model"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"tracking.{name}", getattr(self, name), "must be true or false")
        if self.uri is not None and (not isinstance(self.uri, str) or urlsplit(self.uri).scheme not in URI_SCHEMES):
            raise ConfigError("tracking.uri", self.uri, f"must be null (the local store) or an MLflow tracking URI ({', '.join(URI_SCHEMES)})")
        for name in ("local_store", "artifacts", "experiment"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ConfigError(f"tracking.{name}", getattr(self, name), "must be a non-empty text")
        timeout = self.connect_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ConfigError("tracking.connect_timeout_s", timeout, "must be a number of seconds > 0")
        if not isinstance(self.environment, dict) or not all(isinstance(v, (str, int, float, bool)) for v in self.environment.values()):
            raise ConfigError("tracking.environment", self.environment, "must map MLflow's environment variables to values")

    def apply_environment(self) -> None:
        """MLflow reads these from the environment: set the configured ones the user has not set already."""
        for name, value in self.environment.items():
            os.environ.setdefault(str(name), str(value).lower() if isinstance(value, bool) else str(value))


def open_store(settings: TrackingSettings):
    """(client, experiment id, store URI): the configured server if it answers, else the local store (one warning line)."""
    if settings.uri:
        problem = unreachable(settings.uri, settings.connect_timeout_s)
        if problem is None:
            try:
                return (*_experiment(settings.uri, settings.experiment, None), settings.uri)
            except Exception as error:  # refused, unauthorised, a store MLflow will not open
                problem = f"refused the run ({one_line(error)})"
        log.warning("tracking: %s %s; logging to the local store %s instead", shown(settings.uri), problem, settings.local_store)
    local = local_uri(settings.local_store)
    return (*_experiment(local, settings.experiment, Path(settings.artifacts).resolve().as_uri()), local)


def unreachable(uri: str, timeout_s: float) -> str | None:
    """Why a tracking server does not answer within `timeout_s`, or None (any HTTP answer, even an error page, counts)."""
    if urlsplit(uri).scheme not in ("http", "https"):
        return None  # a database or local URI: opening it is the test
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except requests.RequestException as error:
        return f"cannot be reached ({type(error).__name__})"
    return None


def local_uri(path: str) -> str:
    store = Path(path).resolve()
    store.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store}"


def shown(uri: str) -> str:
    """The URI without a password or user name, for log lines."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else ""
    return urlunsplit(parts._replace(netloc=host))


def _experiment(uri: str, name: str, artifact_location: str | None):
    """(client, experiment id): the named experiment, created (with the local artefact folder) or restored if needed."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "creating initial database tables", at every new store
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client, client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:  # another job of the sweep created it meanwhile
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return client, experiment.experiment_id


def sweep_folder() -> Path | None:
    """The Hydra sweep folder when this process runs a job of a multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).resolve()


def sweep_job_name() -> str:
    """The values the sweeper chose for this job (`model/fusion=gated`), else `job <n>`.

    multirun.yaml in the sweep folder holds the command line as typed (`model/fusion=mean,gated`):
    the job's overrides of a key swept there, or of a key not there (a search sweeper's), name it.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra, parser = HydraConfig.get(), OverridesParser.create()
    try:
        typed = parser.parse_overrides(list(OmegaConf.load(Path(hydra.sweep.dir) / "multirun.yaml").hydra.overrides.task))
    except Exception:  # another launcher's layout: the job number still names it
        return f"job {hydra.job.num}"
    fixed = {o.get_key_element() for o in typed if not o.is_sweep_override()}
    chosen = [o.input_line for o in parser.parse_overrides(list(hydra.overrides.task)) if o.get_key_element() not in fixed]
    return ",".join(chosen) or f"job {hydra.job.num}"


def sweep_parent(client, experiment_id: str, sweep: Path) -> str:
    """The id of the sweep's parent run, found by its tag, created by the first job that gets here.

    Jobs launched in parallel may both create one; each then keeps the oldest and
    the one that lost deletes its own, so every job nests under the same parent.
    """
    key = hashlib.sha256(str(sweep).encode()).hexdigest()[:16]
    found = _parents(client, experiment_id, key)
    if found:
        return found[0]
    mine = client.create_run(experiment_id, run_name=f"sweep {sweep.name}", tags={SWEEP_KEY: key, SWEEP_DIR: str(sweep)}).info.run_id
    client.set_terminated(mine)  # a container: its jobs are the runs
    oldest = _parents(client, experiment_id, key)[0]
    if oldest != mine:
        client.delete_run(mine)
    return oldest


def _parents(client, experiment_id: str, key: str) -> list[str]:
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_KEY}` = '{key}'", order_by=["attributes.start_time ASC"])
    return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))]
