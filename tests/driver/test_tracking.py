"""Experiment tracking (federation/tracking.py), read back through MLflow's own client: params, every round, the
final metrics, the artefacts; a sweep's jobs nested under one parent; a server that cannot be reached; tracking off.

The suite runs with tracking off (tests/conftest.py); these tests turn it on. They share one store: a new SQLite
store costs seconds of MLflow's schema migrations.
"""
import csv
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from support import ROOT, compose_config

from federation.driver.experiment import run_experiment
from federation.entrypoint import EXIT_CONFIG
from federation.round_record import ROUND_DECISIONS
from federation.tracking import (
    PARAMS_PER_BATCH,
    Tracker,
    flat_params,
    git_commit,
    numeric_leaves,
)
from federation.tracking_store import SWEEP_DIR, TrackingSettings

TRACKED = ("experiment=smoke", "progress=false", "torch_threads=1", "tracking.enabled=true")
SHORT = ("federation.rounds=1", "baselines.local=false", "baselines.pooled=false", "adaptation.enabled=false")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(data folder, outputs folder): the generated consortium and the shared store."""
    return tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("outputs")


def store(outputs: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")


def train(folders, run_dir: Path, *overrides: str) -> dict:
    data, outputs = folders
    cfg = compose_config([*TRACKED, f"paths.data_dir={data}", f"paths.output_dir={outputs}", *overrides])
    return run_experiment(cfg, run_dir)


def the_run(client: MlflowClient, run_dir: Path):
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], filter_string=f"tags.`rarefed.run_dir` = '{run_dir.resolve()}'")
    assert len(runs) == 1
    return runs[0]


@pytest.fixture(scope="module")
def tracked(folders):
    """The smoke job (2 rounds, 3 sites, governed, adapted, no pooled model), tracked into the local store, model included."""
    run_dir = folders[1] / "runs" / "tracked"
    train(folders, run_dir, "baselines.pooled=false", "tracking.log_model=true")
    client = store(folders[1])
    return run_dir, client, the_run(client, run_dir)


def test_the_run_logs_the_resolved_config_the_seed_and_the_commit(tracked):
    _, _, run = tracked
    params = run.data.params

    assert run.info.status == "FINISHED"
    assert params["federation.rounds"] == "2" and params["seed"] == "0" and params["training_seeds"] == "[0]"
    assert params["report.table_metrics"] == '["accuracy", "top3_accuracy", "macro_auroc"]'
    assert params["baselines.pooled"] == "false" and params["tracking.enabled"] == "true"
    assert len(params) > PARAMS_PER_BATCH  # logged in several batches
    commit = params["git_commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit) if (ROOT / ".git").exists() else commit == "unknown"
    assert run.data.tags["mlflow.source.git.commit"] == commit and params["git_dirty"] in ("true", "false")


def test_a_source_that_is_not_a_git_checkout_has_an_unknown_commit(tmp_path):
    assert git_commit(tmp_path) == "unknown"


def test_a_param_longer_than_mlflow_allows_is_cut_to_its_limit():
    cfg = compose_config(["+note=" + "x" * 7000])

    assert len(flat_params(cfg)["note"]) == 6000


def test_each_round_is_logged_per_site_at_its_step(tracked):
    run_dir, client, run = tracked
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    sites = sorted({r["site"] for r in rows})

    for site in sites:
        mine = [r for r in rows if r["site"] == site]
        for key, column in ((f"val/accuracy/{site}", "val_accuracy"), (f"update_norm/{site}", "update_norm"), (f"train/train_loss/{site}", "train_loss")):
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in history] == [1, 2], key
            assert [m.value for m in history] == pytest.approx([float(r[column]) for r in mine]), key
        assert [m.value for m in client.get_metric_history(run.info.run_id, f"status/accepted/{site}")] == [float(r["status"] == "accepted") for r in mine]
    for decision in ROUND_DECISIONS:
        logged = [m.value for m in client.get_metric_history(run.info.run_id, f"round/decision/{decision}")]
        assert logged == [float(r["decision"] == decision) for r in rows if r["site"] == sites[0]]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "registry/version")] == [1.0, 2.0]  # a governance finding


def test_the_final_metrics_are_the_summarys(tracked):
    run_dir, _, run = tracked
    summary = json.loads((run_dir / "summary.json").read_text())
    final = {k: v for k, v in run.data.metrics.items() if k.startswith("final/")}

    expected = dict(numeric_leaves({b: summary[b] for b in ("sites", "overall", "mean_over_sites")}, "final"))
    expected = {k.replace("+", "_"): v for k, v in expected.items()}
    assert {k: final[k] for k in expected} == pytest.approx(expected)
    assert final["final/overall/federated/accuracy"] == pytest.approx(summary["overall"]["federated"]["accuracy"])
    assert final["final/sites/site_a/deployed/accuracy"] == pytest.approx(summary["sites"]["site_a"]["deployed"]["accuracy"])
    assert {k: v for k, v in run.data.tags.items() if k.startswith("deployed/")} == {f"deployed/{s}": d["deployed"] for s, d in summary["deployment"].items()}
    assert run.data.metrics["tracking/seconds"] > 0  # what tracking cost the run, by its own clock


def test_the_reports_dashboard_and_model_with_its_card_are_artefacts(tracked, tmp_path):
    run_dir, client, run = tracked

    copied = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path)))

    logged = {str(p.relative_to(copied)) for p in copied.rglob("*") if p.is_file()}
    assert logged == {"summary.md", "summary.json", "quality.json", "metrics.csv", "config.yaml", "dashboard.html", "model/model.safetensors", "model/card.json"}
    assert (copied / "model/model.safetensors").read_bytes() == (run_dir / "model.safetensors").read_bytes()
    assert json.loads((copied / "model/card.json").read_text()) == json.loads((run_dir / "registry/v0002/card.json").read_text())


def test_no_patient_reaches_the_tracker(tracked, folders, tmp_path):
    _, client, run = tracked
    patients = {row["patient_id"] for path in folders[0].rglob("split.csv") for row in csv.DictReader(path.open())}
    copied = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path)))
    texts = [p.read_text(errors="ignore") for p in copied.rglob("*") if p.is_file() and p.suffix != ".safetensors"]
    logged = [*run.data.params.values(), *run.data.tags.values(), *run.data.metrics, *texts]

    assert len(patients) > 20
    assert not [p for p in patients if any(p in text for text in logged)]


@pytest.mark.slow  # a multirun of train.py processes
def test_each_job_of_a_sweep_is_a_run_nested_under_the_sweeps_run(folders, tmp_path):
    data, outputs = folders
    sweep = tmp_path / "sweep"
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "--multirun", *TRACKED, *SHORT, "seed=0,1",
               f"paths.data_dir={data}", f"paths.output_dir={outputs}", f"hydra.sweep.dir={sweep}"]

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})

    assert done.returncode == 0, done.stderr[-3000:]
    client = store(outputs)
    experiment = client.get_experiment_by_name("diagnosis").experiment_id
    parents = client.search_runs([experiment], filter_string=f"tags.`{SWEEP_DIR}` = '{sweep.resolve()}' and tags.`rarefed.sweep_key` != ''")
    assert len(parents) == 1
    jobs = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert sorted(j.data.params["seed"] for j in jobs) == ["0", "1"]
    assert sorted(j.info.run_name for j in jobs) == ["seed=0", "seed=1"]
    assert all(j.info.status == "FINISHED" and j.data.tags["rarefed.run_dir"].startswith(str(sweep.resolve())) for j in jobs)


def test_an_unreachable_server_is_said_once_and_the_run_logs_locally(folders, caplog):
    run_dir = folders[1] / "runs" / "unreachable"

    with caplog.at_level(logging.INFO):
        train(folders, run_dir, *SHORT, "tracking.uri=http://127.0.0.1:9")  # the discard port: nothing listens

    said = [r.getMessage() for r in caplog.records if "127.0.0.1:9" in r.getMessage() and r.levelno >= logging.WARNING]
    assert len(said) == 1 and "local store" in said[0]
    assert (run_dir / "summary.json").exists()
    assert the_run(store(folders[1]), run_dir).info.status == "FINISHED"


def test_a_tracking_failure_during_the_run_is_one_warning_and_tracking_stops(tracked, caplog):
    _, client, _ = tracked
    tracker = Tracker(client, "0" * 32, TrackingSettings(enabled=True))  # a run the store does not hold

    with caplog.at_level(logging.WARNING):
        tracker.log_metrics({"val/accuracy/site_a": 0.5}, step=1)
        tracker.log_metrics({"val/accuracy/site_a": 0.6}, step=2)
        tracker.end("FINISHED")

    said = [r.getMessage() for r in caplog.records if r.name == "federation.tracking"]
    assert len(said) == 1 and "logging metrics of step 1 failed" in said[0] and "the run goes on" in said[0]
    assert tracker.client is None


def test_tracking_off_writes_no_store(folders, tmp_path):
    data, _ = folders
    cfg = compose_config(["experiment=smoke", "progress=false", "torch_threads=1", "tracking=off", *SHORT, f"paths.data_dir={data}", f"paths.output_dir={tmp_path}"])

    run_experiment(cfg, tmp_path / "run")

    assert (tmp_path / "run" / "summary.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.slow
def test_a_bad_tracking_setting_is_one_line_status_2_and_no_run_folder(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "RAREFED_FULL_ERROR": "0"}
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "tracking.uri=ftp://tracker.example", f"hydra.run.dir={tmp_path / 'run'}"]

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)

    assert done.returncode == EXIT_CONFIG and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: tracking.uri=ftp://tracker.example: must be null (the local store) or an MLflow tracking URI")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_deployment_logs_its_rounds_as_an_in_process_run_does(tmp_path):
    """The real ServerApp over an in-process grid (tests/deployment/test_flower_governance.py): round 1 is refused by the agreement,
    rounds 2 and 3 go through; the tracker sees each round's decision at its step, and the coordinator's params."""
    from test_flower import write_table_consortium
    from test_flower_governance import governed_overrides, run_deployed

    outputs = tmp_path / "outputs"
    run_deployed(governed_overrides(write_table_consortium(tmp_path / "tables")), tmp_path / "deployed",
                 ("tracking.enabled=true", f"paths.output_dir={outputs}"))

    client = store(outputs)
    run = the_run(client, tmp_path / "deployed")
    failed = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "round/decision/failed")}
    assert failed == {1: 1.0, 2: 0.0, 3: 0.0}
    assert run.data.params["federation.rounds"] == "3" and run.data.params["deploy.governance"] == "true"
    assert run.info.status == "FINISHED"
