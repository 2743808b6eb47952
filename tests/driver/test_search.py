"""Hyper-parameter search on validation data (hparams_search=<name>, federation/sweeps/): spaces, objective, refusals, one search."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from support import CONF, ROOT
from test_quality import _heart_like

from federation.settings import ConfigError
from federation.sweeps.objective import Objective, check_objective
from federation.sweeps.search import best_trial
from federation.sweeps.space import distribution, search_space
from modalities.consortium import load_consortium

SHIPPED = [("heart", ["experiment=heart_flamby"]), ("heart_cv", ["experiment=heart_flamby"]), ("heart_dp", ["experiment=heart_flamby"]),
           ("phenopackets_dx", ["experiment=phenopackets_dx"]), ("default", [])]


def _compose(overrides: list[str]):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "RAREFED_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=ROOT, capture_output=True, text=True, env=env)


@pytest.mark.parametrize("name, overrides", SHIPPED)
def test_every_shipped_space_names_settings_its_run_has_and_trials_evaluate_on_validation(name, overrides):
    cfg = _compose([*overrides, f"hparams_search={name}"])

    space = search_space(OmegaConf.to_container(cfg.hydra.sweeper.params), [], cfg)
    objective = check_objective(cfg)

    assert set(space.distributions) == set(cfg.hydra.sweeper.params)
    assert cfg.data.evaluate_on == "val"
    assert "data.evaluate_on=test" in cfg.hydra.sweeper.test_overrides
    assert objective.aggregates == ("mean", "worst")
    for enqueued in cfg.hydra.sweeper.enqueue:  # the hand-set values tried first lie inside the space
        for key, value in enqueued.items():
            assert space.distributions[key]._contains(space.distributions[key].to_internal_repr(value))


@pytest.mark.parametrize("line, expected", [
    ("eta=tag(log, interval(1e-3, 1))", FloatDistribution(1e-3, 1.0, log=True)),
    ("dropout=interval(0, 0.5)", FloatDistribution(0.0, 0.5)),
    ("dim=tag(int, interval(16, 128))", IntDistribution(16, 128)),
    ("rounds=range(5, 20, step=5)", IntDistribution(5, 15, step=5)),  # Hydra's range leaves out its stop
    ("fusion=choice(mean, gated)", CategoricalDistribution(["mean", "gated"])),
])
def test_sweep_overrides_become_optuna_distributions(line, expected):
    [override] = OverridesParser.create().parse_overrides([line])

    assert distribution(override) == expected


def test_a_fixed_value_in_the_space_is_set_in_every_trial():
    cfg = _compose(["experiment=heart_flamby", "hparams_search=heart"])

    space = search_space({"federation.rounds": "3", "federation.strategy.eta": "interval(0.01, 1)"}, ["federation=fedadam,fedyogi"], cfg)

    assert space.fixed == ["federation.rounds=3"]
    assert set(space.distributions) == {"federation.strategy.eta", "federation"}
    assert space.overrides({"federation": "fedyogi"}) == ["federation.rounds=3", "federation=fedyogi"]


@pytest.mark.parametrize("key", ["federation.strategy.etaa", "model/fusionn", "federation.strategy.eta.x"])
def test_a_space_key_the_config_lacks_is_refused_naming_it(key):
    cfg = _compose(["experiment=heart_flamby", "hparams_search=heart"])

    with pytest.raises(ConfigError, match=f"hydra.sweeper.params={key}: .*does not have"):
        search_space({key: "interval(0, 1)"}, [], cfg)


@pytest.mark.slow
def test_a_space_key_the_config_lacks_stops_the_search_in_one_line_before_any_trial(tmp_path):
    sweep = tmp_path / "sweep"

    done = _run("train.py", "-m", "experiment=heart_flamby", "hparams_search=heart", f"hydra.sweep.dir={sweep}", "federation.strategy.etaa=interval(0,1)")

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "hydra.sweeper.params=federation.strategy.etaa" in done.stderr
    assert not sweep.exists()  # no trial ran


@pytest.mark.slow
def test_an_objective_metric_the_run_does_not_report_stops_the_search_in_one_line(tmp_path):
    sweep = tmp_path / "sweep"

    done = _run("train.py", "-m", "experiment=heart_flamby", "hparams_search=heart", f"hydra.sweep.dir={sweep}", "search.metric=top5")

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: search.metric=top5: this run reports ['accuracy'] (report.metrics)"
    assert not sweep.exists()


@pytest.mark.slow
def test_an_enqueued_setting_outside_the_space_is_refused_before_any_trial(tmp_path):
    done = _run("train.py", "-m", "experiment=heart_flamby", "hparams_search=heart", f"hydra.sweep.dir={tmp_path / 's'}", "federation.local_steps=choice(5, 10)")

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: hydra.sweeper.enqueue=") and "federation.local_steps=100 is not a point of the search space" in done.stderr


@pytest.mark.parametrize("overrides, setting", [
    (["search.approach=pooled", "baselines.pooled=false"], "search.approach=pooled"),
    (["search.aggregates=[mean,median]"], "search.aggregates"),
])
def test_an_objective_the_run_cannot_produce_is_refused_before_training(overrides, setting):
    cfg = _compose(["experiment=heart_flamby", "hparams_search=heart", *overrides])

    with pytest.raises(ConfigError, match=setting):
        check_objective(cfg)


@pytest.mark.slow
def test_a_search_whose_trials_would_evaluate_on_test_is_refused(tmp_path):
    done = _run("train.py", "-m", "experiment=heart_flamby", "hparams_search=heart", f"hydra.sweep.dir={tmp_path / 's'}", "data.evaluate_on=test")

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: data.evaluate_on=test: a search chooses on validation data only")


def test_the_objective_is_the_mean_and_the_worst_site_in_the_metrics_direction():
    summary = {"sites": {"a": {"federated": {"accuracy": 0.5, "ece": 0.1}}, "b": {"federated": {"accuracy": 0.75, "ece": 0.3}},
                         "c": {"federated": {"accuracy": math.nan, "ece": math.nan}}}}

    assert Objective("accuracy").values(summary) == (0.625, 0.5)
    assert Objective("ece", direction="minimize").values(summary) == pytest.approx((0.2, 0.3))
    with pytest.raises(ConfigError, match="site a reports no such value"):
        Objective("top1").values(summary)


def test_the_best_trial_has_the_best_mean_and_ties_go_to_the_better_worst_site():
    study = optuna.create_study(directions=["maximize", "maximize"])
    for mean, worst in ((0.7, 0.5), (0.8, 0.4), (0.8, 0.6), (0.6, 0.9)):
        study.add_trial(optuna.trial.create_trial(values=[mean, worst], user_attrs={"values": [mean, worst]}))

    assert best_trial(study, ["maximize", "maximize"]).number == 2


@pytest.fixture(scope="module")
def heart_root(tmp_path_factory) -> str:
    """Four small files in FLamby's heart format, so these tests need no shared data (a fresh clone has none)."""
    root = tmp_path_factory.mktemp("heart")
    _heart_like(root)
    return str(root)


def test_evaluating_on_validation_reads_each_sites_validation_rows_and_no_test_row(heart_root):
    data = _compose(["experiment=heart_flamby", f"data.root={heart_root}", "data.split.val_fraction=0.2"]).data
    on_test = load_consortium(data, seed=0)
    data.evaluate_on = "val"

    on_val = load_consortium(data, seed=0)

    for tested, searched in zip(on_test.sites, on_val.sites):
        ids = lambda site, split: {item["patient_id"] for item in site.splits[split].items}
        assert ids(searched, "test") == ids(tested, "val")
        assert not ids(searched, "test") & ids(tested, "test")


def test_evaluating_on_validation_without_validation_rows_is_refused(heart_root):
    data = _compose(["experiment=heart_flamby", f"data.root={heart_root}", "data.evaluate_on=val"]).data  # FLamby's split carves none

    with pytest.raises(ValueError, match="data.evaluate_on=val: site.* no validation rows"):
        load_consortium(data, seed=0)


@pytest.mark.slow
def test_a_search_chooses_on_validation_then_tests_its_best_trial_once_and_reports_it(tmp_path, heart_root):
    sweep = tmp_path / "sweep"

    done = _run("train.py", "-m", "experiment=heart_flamby", "hparams_search=heart", f"data.root={heart_root}", f"hydra.sweep.dir={sweep}", "seeds=[0]",
                "torch_threads=1", "federation.rounds=2", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=2",
                "federation.local_steps=choice(5, 10)", "hydra.sweeper.enqueue=[]", "hydra.sweeper.test_overrides=['data.evaluate_on=test']")
    assert done.returncode == 0, done.stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trial_configs = [yaml.safe_load((sweep / str(n) / ".hydra" / "config.yaml").read_text()) for n in range(3)]
    test_config = yaml.safe_load((sweep / "test_of_best" / ".hydra" / "config.yaml").read_text())
    reported = _run("collect_sweep.py", str(sweep))

    assert results["trials"] == {"complete": 3}
    assert [c["data"]["evaluate_on"] for c in trial_configs] == ["val"] * 3  # no trial saw a test row
    assert test_config["data"]["evaluate_on"] == "test"
    best = trial_configs[results["best"]["trial"]]
    assert {k: test_config["federation"][k.split(".")[-1]] for k in ("federation.local_steps",)} == {"federation.local_steps": best["federation"]["local_steps"]}
    assert results["best"]["validation"]["mean"] >= max(_mean_val(sweep, n) for n in range(3)) - 1e-9
    assert set(results["test"]["values"]) == {"mean", "worst"}
    assert reported.returncode == 0, reported.stderr[-2000:]
    assert "test_of_best" not in reported.stdout  # the test run is never a row beside the trials
    report = (sweep / "report" / "sweep.md").read_text()
    assert "test, run once with `data.evaluate_on=test`" in report
    for plot in ("params.png", "sites.png", "history.png", "importances.png"):
        assert (sweep / "report" / plot).stat().st_size > 0


def _mean_val(sweep, number: int) -> float:
    import json

    return json.loads((sweep / str(number) / "summary.json").read_text())["mean_over_sites"]["federated"]["accuracy"]


def _fake_launch(calls: list):
    """A launcher stand-in: records each job's overrides; a job's value is its local_steps / 100, per fold k: + k / 100."""
    from hydra.core.utils import JobReturn, JobStatus

    def launch(job_overrides, first_job):
        calls.append(job_overrides)
        returns = []
        for overrides in job_overrides:
            settings = dict(o.split("=", 1) for o in overrides)
            value = int(settings.get("federation.local_steps", 0)) / 100 + int(settings.get("data.split.val_fold", 0)) / 100
            failed = settings.get("federation.local_steps") == "50"
            returns.append(JobReturn(overrides=overrides, status=JobStatus.FAILED if failed else JobStatus.COMPLETED,
                                     _return_value=RuntimeError("diverged") if failed else (value, value - 0.5)))
        return returns

    return launch


def test_a_trial_with_folds_is_one_job_per_fold_scored_by_their_mean_and_a_failed_job_fails_its_trial(tmp_path):
    from federation.sweeps.search import Search, SearchSettings

    cfg = _compose(["experiment=heart_flamby", "hparams_search=heart", f"hydra.sweep.dir={tmp_path}"])
    settings = SearchSettings(sampler=optuna.samplers.RandomSampler(seed=0), n_trials=3, params={"federation.local_steps": "choice(25, 50, 100)"},
                              enqueue=[{"federation.local_steps": n} for n in (25, 50, 100)],  # every choice once, in this order
                              folds=["data.split.val_fold=0", "data.split.val_fold=2"], test_overrides=["data.evaluate_on=test"])
    calls = []

    results = Search(settings, cfg, _fake_launch(calls), []).run()

    trial_jobs, [test_job] = [job for batch in calls[:-1] for job in batch], calls[-1]
    assert len(trial_jobs) == 6 and all(any(o.startswith("data.split.val_fold=") for o in job) for job in trial_jobs)
    assert not any("data.evaluate_on=test" in job for job in trial_jobs)
    assert results["trials"] == {"complete": 2, "fail": 1}  # local_steps 50 failed in one fold
    assert results["best"]["params"] == {"federation.local_steps": 100}
    assert results["best"]["validation"] == pytest.approx({"mean": 1.01, "worst": 0.51})  # folds 0 and 2: 1.00 and 1.02
    assert "federation.local_steps=100" in test_job and "data.evaluate_on=test" in test_job
    assert not any(o.startswith("data.split.val_fold=") for o in test_job)
    assert (tmp_path / "optimization_results.yaml").exists()
