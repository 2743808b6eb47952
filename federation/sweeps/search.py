"""The study loop behind `hydra/sweeper=optuna`: ask Optuna, launch the trials as Hydra jobs, tell, then test the best once.

Trials see validation data only: the search refuses to start unless the runs it launches
evaluate on validation (`data.evaluate_on=val`), and checks the search space's keys and the
objective's metric before any trial trains (federation/sweeps/space.py, objective.py). When
the study is done, the best trial (highest mean over sites; ties: the better worst site) is
run once more with `test_overrides` (`data.evaluate_on=test`, and e.g. more seeds) in the job
folder `test_of_best/`; its test figures are reported beside, never fed back to the study.
With `folds` (e.g. `data.split.val_fold=0` ... `=4`) a trial is one job per fold and its
values are the folds' means: a validation figure over every training row, not one small draw.

The study is stored in the sweep folder (`optuna.db`, SQLite) with the results
(`optimization_results.yaml`), so scripts/collect_sweep.py can plot its history and the
parameters' importances. Samplers that optimise one objective (`SINGLE_OBJECTIVE`) get the
mean only; the worst site is then kept beside each trial as a user attribute.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from federation.settings import ConfigError
from federation.sweeps.layout import RESULTS, STUDY_DB, TEST_JOB
from federation.sweeps.objective import check_objective
from federation.sweeps.space import SearchSpace, search_space

log = logging.getLogger(__name__)

SINGLE_OBJECTIVE = ("CmaEsSampler",)  # Optuna's samplers that refuse several objectives


@dataclass
class SearchSettings:
    """The sweeper's config (conf/hydra/sweeper/optuna.yaml)."""

    sampler: optuna.samplers.BaseSampler
    n_trials: int = 20
    n_jobs: int = 1
    study_name: str = "search"
    storage: str | None = None
    direction: list[str] | None = None
    params: Mapping[str, str] | None = None
    enqueue: list[Mapping] = field(default_factory=list)
    test_overrides: list[str] = field(default_factory=lambda: ["data.evaluate_on=test"])
    folds: list[str] = field(default_factory=list)  # one job per entry a trial (e.g. data.split.val_fold=k); values: their means


class Search:
    """One study over one search space; `launch(overrides, first_job_number)` runs Hydra jobs."""

    def __init__(self, settings: SearchSettings, config: DictConfig, launch, arguments: Sequence[str]):
        _require_validation(config)
        self.objective = check_objective(config)
        self.space = search_space(settings.params, arguments, config)
        self.settings, self.launch = settings, launch
        for params in settings.enqueue:
            _require_inside(params, self.space)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.directions = list(settings.direction or self.objective.directions)
        if len(self.directions) > 1 and type(settings.sampler).__name__ in SINGLE_OBJECTIVE:
            log.warning("%s optimises one objective: the mean over sites; the worst site is kept beside each trial", type(settings.sampler).__name__)
            self.directions = self.directions[:1]
        self.jobs = self.trials = 0

    def run(self) -> dict:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(study_name=self.settings.study_name, storage=self._storage(), sampler=self.settings.sampler,
                                    directions=self.directions, load_if_exists=True)
        for params in self.settings.enqueue:
            study.enqueue_trial(dict(params))
        while self.trials < self.settings.n_trials:
            self._batch(study, min(self.settings.n_jobs, self.settings.n_trials - self.trials))
        best = best_trial(study, self.directions)
        results = self._results(study, best, self._test(best))
        (self.sweep_dir / RESULTS).write_text(yaml.safe_dump(results, sort_keys=False))
        log.info("best trial %d: %s; validation %s; test %s", best.number, best.params, results["best"]["validation"], results["test"]["values"])
        return results

    def _batch(self, study: optuna.Study, size: int) -> None:
        """`size` trials, each launched once per fold (all in one launch, so a parallel launcher runs them together)."""
        trials = [study.ask(self.space.distributions) for _ in range(size)]
        folds = [[fold] for fold in self.settings.folds] or [[]]
        returns = self.launch([self.space.overrides(t.params) + fold for t in trials for fold in folds], self.jobs)
        first_job, self.jobs, self.trials = self.jobs, self.jobs + len(returns), self.trials + size
        for i, trial in enumerate(trials):
            per_fold = [_values(ret) for ret in returns[i * len(folds):(i + 1) * len(folds)]]
            if any(v is None or any(math.isnan(x) for x in v) for v in per_fold):
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            values = [sum(column) / len(column) for column in zip(*per_fold)]  # each aggregate, mean over the folds
            jobs = [str(first_job + i * len(folds) + f) for f in range(len(folds))]
            trial.set_user_attr("values", values)
            trial.set_user_attr("job", ",".join(jobs))
            study.tell(trial, values[: len(self.directions)])

    def _test(self, best: optuna.trial.FrozenTrial) -> dict:
        """The best trial's setting, run once on test data with the test overrides."""
        overrides = [*self.space.overrides(best.params), *self.settings.test_overrides, f"hydra.sweep.subdir={TEST_JOB}"]
        [ret] = self.launch([overrides], self.jobs)
        values = _values(ret)
        if values is None:
            raise RuntimeError(f"the best trial's test run failed: see {self.sweep_dir / TEST_JOB}")
        return {"job": TEST_JOB, "overrides": overrides[:-1], "values": dict(zip(self.objective.aggregates, values))}

    def _results(self, study: optuna.Study, best: optuna.trial.FrozenTrial, test: dict) -> dict:
        states = [t.state.name.lower() for t in study.trials]
        objective = self.objective
        return {
            "study": self.settings.study_name,
            "sampler": type(self.settings.sampler).__name__,
            "objective": {"metric": objective.metric, "approach": objective.approach, "aggregates": list(objective.aggregates),
                          "over": "sites", "data": "validation", "directions": self.directions, "folds": self.settings.folds},
            "trials": {state: states.count(state) for state in sorted(set(states))},
            "fixed": self.space.fixed,
            "best": {"trial": best.number, "job": best.user_attrs.get("job"), "params": dict(best.params),
                     "validation": dict(zip(objective.aggregates, best.user_attrs["values"]))},
            "test": test,
        }

    def _storage(self) -> str:
        return self.settings.storage or f"sqlite:///{(self.sweep_dir / STUDY_DB).resolve()}"


def best_trial(study: optuna.Study, directions: Sequence[str]) -> optuna.trial.FrozenTrial:
    """The finished trial with the best first objective (the mean over sites); ties: the better second, then the earlier."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise RuntimeError("no trial of the search finished: see the job folders' logs")
    sign = 1.0 if directions[0] == "maximize" else -1.0  # every aggregate of one metric shares its direction
    return max(done, key=lambda t: (*(sign * v for v in t.user_attrs.get("values", t.values)), -t.number))


def _values(ret: JobReturn) -> tuple[float, ...] | None:
    """A job's objective values; None for a failed job (logged in one line)."""
    if ret.status != JobStatus.COMPLETED:
        log.warning("trial failed: %s", " ".join(str(ret._return_value).splitlines())[:300])
        return None
    value = ret.return_value
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),)


def _require_inside(params: Mapping, space: SearchSpace) -> None:
    """An enqueued setting (e.g. the hand-tuned one) must be a point of the space, or Optuna fails mid-search."""
    for key, value in params.items():
        known = space.distributions.get(key)
        try:
            inside = known is not None and known._contains(known.to_internal_repr(value))
        except ValueError:
            inside = False
        if not inside:
            raise ConfigError("hydra.sweeper.enqueue", dict(params), f"{key}={value} is not a point of the search space ({known or 'no such key'})")


def _require_validation(config: DictConfig) -> None:
    """Trials must choose on validation data: the run they launch evaluates its validation split, not test."""
    evaluate_on = OmegaConf.select(config, "data.evaluate_on", default="test")
    if evaluate_on != "val":
        raise ConfigError("data.evaluate_on", evaluate_on, "a search chooses on validation data only: set data.evaluate_on=val "
                          "(hparams_search configs do); the best trial is tested once at the end")

