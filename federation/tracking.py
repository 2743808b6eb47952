"""What a run reports to the experiment tracker (MLflow), so runs can be compared, searched and plotted side by side.

One MLflow run per job (a multirun's jobs nested under one parent run per sweep):

- params: the resolved config, flattened (`federation.rounds`, ...), the training
  seeds and the git commit of the source ("unknown" outside a git checkout);
- per round, at step = round: what the round's RoundRecord holds, the same record
  the governance observers see: each site's status, sample count, update norm, train
  and validation metrics, privacy spent, the round's decision, and the observers'
  numeric findings (drift, anomaly geometry, contributions, the registry version,
  the Flower coordinator's bytes per site);
- at the end: the final metrics of summary.json (per site and overall, every approach:
  local, federated, pooled, deployed ...), the run folder's reports and model, and
  `tracking/seconds`, the time the tracker's own calls took (benchmarks/tracking_overhead.py).

Only what already leaves a site reaches the tracker: metrics, norms and counts, never
a record, a patient or a model update. Tracking must never cost the run: after the
settings are checked, any failure of the tracker is one warning and tracking stops,
while training goes on.
"""
from __future__ import annotations

import json
import logging
import math
import numbers
import re
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from federation.entrypoint import one_line
from federation.round_record import ROUND_DECISIONS, SITE_STATUSES, RoundRecord
from federation.tracking_store import (
    TrackingSettings,
    open_store,
    shown,
    sweep_folder,
    sweep_job_name,
    sweep_parent,
)

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parents[1]
REPORTS = ("summary.md", "summary.json", "quality.json", "metrics.csv", "config.yaml")
SUMMARY_BLOCKS = ("sites", "overall", "mean_over_sites", "sd", "deployed_vs_local", "communication")
NOT_METRICS = ("ledger",)  # record.extra entries that are bookkeeping (hashes, sequence numbers), not measurements
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)
PARAMS_PER_BATCH = 100  # MLflow's limit on params in one log_batch (MAX_PARAMS_TAGS_PER_BATCH)


@contextmanager
def track(cfg: DictConfig, out_dir: Path) -> Iterator[Tracker]:
    """The tracker of one job around `run_experiment`: the run ends FINISHED with the run folder logged, or FAILED.

    Raises ConfigError on a bad `tracking` setting, before anything is trained.
    """
    settings = TrackingSettings.from_cfg(cfg.get("tracking") or {})
    tracker = Tracker.start(cfg, out_dir, settings) if settings.enabled else Tracker(None, "", settings)
    try:
        yield tracker
    except BaseException as error:
        tracker.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    tracker.finish(cfg, out_dir)


class Tracker:
    """An open MLflow run; with `client=None` (tracking off, or stopped after a failure) every call does nothing."""

    def __init__(self, client, run_id: str, settings: TrackingSettings, several_seeds: bool = False):
        self.client, self.run_id, self.settings, self.several_seeds = client, run_id, settings, several_seeds
        self.run_dirs: list[Path] = []
        self.seconds = 0.0  # spent in the tracker's own calls: logged as `tracking/seconds`, what tracking cost the run

    @classmethod
    def start(cls, cfg: DictConfig, out_dir: Path, settings: TrackingSettings) -> Tracker:
        """Open the store, create the run (nested under its sweep's parent in a multirun), log the params."""
        started = time.perf_counter()
        try:
            settings.apply_environment()
            client, experiment_id, uri = open_store(settings)
            sweep = sweep_folder()
            tags = {"rarefed.run_dir": str(Path(out_dir).resolve()), "mlflow.source.git.commit": git_commit(SOURCE)}
            if sweep is not None:
                tags |= {"mlflow.parentRunId": sweep_parent(client, experiment_id, sweep), "rarefed.sweep_dir": str(sweep)}
            run = client.create_run(experiment_id, run_name=run_name(out_dir), tags=tags)
        except Exception as error:
            log.warning("tracking: could not start (%s); the run goes on without it", one_line(error))
            return cls(None, "", settings)
        log.info("tracking: MLflow run %s in %s", run.info.run_id, shown(uri))
        seeds = training_seeds(cfg)
        tracker = cls(client, run.info.run_id, settings, several_seeds=len(seeds) > 1)
        run_facts = {"git_commit": tags["mlflow.source.git.commit"], "git_dirty": git_dirty(SOURCE), "training_seeds": json.dumps(seeds)}
        tracker.log_params(flat_params(cfg) | run_facts)
        tracker.seconds = time.perf_counter() - started
        return tracker

    def observers(self, seed: int, run_dir: Path) -> list:
        """The round observer for one training seed (metric names prefixed `seed_<n>/` when the job trains several)."""
        self.run_dirs.append(Path(run_dir))
        if self.client is None:
            return []
        return [RoundMetrics(self, f"seed_{seed}/" if self.several_seeds else "")]

    def log_params(self, params: Mapping[str, str]) -> None:
        """In batches of MLflow's 100 params a request."""
        if self.client is None:
            return
        from mlflow.entities import Param

        items = [Param(_key(k), v) for k, v in params.items()]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self._safely("logging params", lambda chunk=items[start:start + PARAMS_PER_BATCH]: self.client.log_batch(self.run_id, params=chunk))

    def log_metrics(self, values: Mapping[str, float], step: int = 0) -> None:
        """One batch (MlflowClient splits it at MLflow's 1000 metrics a request)."""
        if self.client is None or not values:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_key(k), float(v), now, step) for k, v in values.items()]
        self._safely(f"logging metrics of step {step}", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def finish(self, cfg: DictConfig, out_dir: Path) -> None:
        """The final metrics of summary.json, the deployment choices as tags, the run folder's files; then FINISHED."""
        if self.client is None:
            return
        summary_file = Path(out_dir) / "summary.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            self.log_metrics(summary_metrics(summary))
            for site, choice in deployed(summary).items():
                self._safely("tagging the deployment", lambda s=site, c=choice: self.client.set_tag(self.run_id, _key(f"deployed/{s}"), c))
        for path, folder in artefacts(cfg, Path(out_dir), self.run_dirs, self.settings.log_model):
            self._safely(f"logging {path.name}", lambda p=path, f=folder: self.client.log_artifact(self.run_id, str(p), f))
        self.log_metrics({"tracking/seconds": self.seconds})
        self.end("FINISHED")

    def end(self, status: str) -> None:
        self._safely("ending the run", lambda: self.client.set_terminated(self.run_id, status))

    def _safely(self, what: str, call) -> None:
        """Run one tracker call; on any failure, one warning, and tracking stops (a dead server must not stall every round)."""
        if self.client is None:
            return
        started = time.perf_counter()
        try:
            call()
        except Exception as error:
            log.warning("tracking: %s failed (%s); tracking stops, the run goes on", what, one_line(error))
            self.client = None
        self.seconds += time.perf_counter() - started


class RoundMetrics:
    """A round observer (federation/round_record.py) that logs each RoundRecord at step = its round."""

    def __init__(self, tracker: Tracker, prefix: str = ""):
        self.tracker, self.prefix = tracker, prefix

    def on_round(self, record: RoundRecord) -> None:
        self.tracker.log_metrics({self.prefix + k: v for k, v in round_metrics(record).items()}, step=record.round)


def round_metrics(record: RoundRecord) -> dict[str, float]:
    """What the record holds, as numbers: the decision and each site's status one-hot, so every curve is complete."""
    values = {f"round/decision/{d}": float(record.decision == d) for d in ROUND_DECISIONS}
    values["round/participants"] = float(len(record.participants()))
    for o in record.outcomes:
        values |= {f"status/{s}/{o.site}": float(o.status == s) for s in SITE_STATUSES}
        values[f"n_samples/{o.site}"] = float(o.n_samples)
        values |= {f"update_norm/{o.site}": o.update_norm} if _finite(o.update_norm) else {}
        values |= {f"train/{k}/{o.site}": v for k, v in o.train_metrics.items() if _finite(v)}
        values |= {f"val/{k}/{o.site}": v for k, v in o.val_metrics.items() if _finite(v)}
    for site, spent in record.privacy.items():
        values |= {f"privacy/{k}/{site}": v for k, v in spent.items() if _finite(v)}
    findings = {k: v for k, v in record.extra.items() if k not in NOT_METRICS}
    return values | dict(numeric_leaves(findings))


def summary_metrics(summary: Mapping) -> dict[str, float]:
    """The final figures of summary.json under `final/`: per site and overall, per approach (and their sd over seeds)."""
    return dict(numeric_leaves({block: summary[block] for block in SUMMARY_BLOCKS if block in summary}, "final"))


def deployed(summary: Mapping) -> dict[str, str]:
    """What each site deployed (summary["deployment"]), or {} without per-site adaptation (or over several seeds)."""
    return {site: entry["deployed"] for site, entry in (summary.get("deployment") or {}).items() if isinstance(entry, Mapping) and isinstance(entry.get("deployed"), str)}


def numeric_leaves(tree: Mapping, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(path/to/leaf, value) for every finite number or bool in nested mappings; text and lists are left out."""
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from numeric_leaves(value, name)
        elif isinstance(value, numbers.Real) and _finite(value):
            yield name, float(value)


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as `a.b.c` -> value text; lists whole as JSON, values cut at MLflow's 6000 characters."""
    def walk(node: Any, prefix: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, Mapping) and node:
            for key, value in node.items():
                yield from walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            text = node if isinstance(node, str) else json.dumps(node, default=str)
            yield prefix, text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "..."

    return dict(walk(OmegaConf.to_container(cfg, resolve=True), ""))


def training_seeds(cfg: DictConfig) -> list[int]:
    return list(cfg.get("seeds") or [cfg.seed])


def git_commit(source: Path) -> str:
    """The commit the code was run from; "unknown" outside a git checkout (an installed copy, a tarball) or without git."""
    head = _git(source, "rev-parse", "HEAD")
    return head.strip() if head is not None else "unknown"


def git_dirty(source: Path) -> str:
    """"true" when tracked files differ from that commit (the run's code is not the commit's), "false", or "unknown"."""
    changed = _git(source, "status", "--porcelain", "--untracked-files=no")
    return "unknown" if changed is None else json.dumps(bool(changed.strip()))


def _git(source: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git installed, or a hung file system
        return None
    return done.stdout if done.returncode == 0 else None


def run_name(out_dir: Path) -> str:
    """A sweep job's own overrides (`seed=1`), else the run folder's name (its date and time)."""
    return sweep_job_name() if sweep_folder() is not None else Path(out_dir).name


def artefacts(cfg: DictConfig, out_dir: Path, run_dirs: list[Path], log_model: bool) -> list[tuple[Path, str | None]]:
    """(file, artefact folder) for each report the run wrote: summaries, quality, metrics, config, dashboards, model and card."""
    found = [(out_dir / name, None) for name in REPORTS]
    governance = cfg.get("governance")
    if governance is not None and governance.get("enabled", True):
        from federation.governance.layout import dashboard_path, registry_dir
        from federation.governance.registry import CARD, Registry

        for run_dir in run_dirs:
            found.append((dashboard_path(governance, run_dir), None if run_dir == out_dir else run_dir.name))
        if run_dirs:  # the card always (a few kB); the weights only with log_model
            registry = Registry(registry_dir(governance, run_dirs[-1]))  # the last seed's: its model is model.safetensors
            current = registry.current() if registry.root.is_dir() else None
            found += [(registry.path(current) / CARD, "model")] if current is not None else []
    found += [(out_dir / "model.safetensors", "model")] if log_model else []
    return [(path, folder) for path, folder in found if path.is_file()]


def _key(name: str) -> str:
    """A metric or param name MLflow accepts on every system: letters, digits, `_ - . /` and spaces (`finetuned+calibrated`
    becomes `finetuned_calibrated`)."""
    return re.sub(r"[^\w\-. /]", "_", name)[:250]


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and math.isfinite(value)
