"""Sweeps beyond one process: the launcher configs compose, and a multirun's summaries become one table."""

import importlib.util
import json
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir
from support import CONF, ROOT

SCRIPT = ROOT / "scripts" / "collect_sweep.py"
spec = importlib.util.spec_from_file_location("collect_sweep", SCRIPT)
collect_sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(collect_sweep)


def _job(sweep, number: int, overrides: list[str], overall: dict | None, sd: dict | None = None):
    folder = sweep / str(number)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if overall is not None:
        summary = {"metric_names": list(next(iter(overall.values()))), "overall": overall}
        if sd:
            summary["sd"] = {"overall": sd}
        (folder / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def sweep(tmp_path):
    _job(tmp_path, 10, ["model/fusion=gated", "seed=1"], {"federated": {"accuracy": 0.5, "macro_auroc": 0.75}, "pooled": {"accuracy": 0.25, "macro_auroc": 0.5}})
    _job(tmp_path, 2, ["model/fusion=mean", "seed=1"], {"federated": {"accuracy": 0.125, "macro_auroc": float("nan")}},
         sd={"federated": {"accuracy": 0.0625, "macro_auroc": float("nan")}})
    _job(tmp_path, 3, ["model/fusion=attention", "seed=1"], None)  # crashed before writing its summary
    return tmp_path


def test_one_row_per_job_in_job_order_with_its_overrides_and_metrics(sweep):
    lines = collect_sweep.sweep_table(sweep).splitlines()

    assert lines[0] == "Overrides of every job: `seed=1`"
    assert lines[2] == "| job | overrides | status | federated accuracy | federated macro_auroc |"
    assert lines[4] == "| 2 | model/fusion=mean | done | 0.125 ± 0.062 | n/a |"
    assert lines[5].startswith("| 3 | model/fusion=attention | no summary.json")
    assert lines[6] == "| 10 | model/fusion=gated | done | 0.500 | 0.750 |"
    assert len(lines) == 7


def test_approach_and_metrics_are_chosen_on_the_command_line(sweep, tmp_path):
    out = tmp_path / "table.md"

    done = subprocess.run([sys.executable, str(SCRIPT), str(sweep), "--approach", "pooled", "--metrics", "accuracy", "--out", str(out)],
                          check=True, capture_output=True, text=True)

    assert "| 10 | model/fusion=gated | done | 0.250 |" in done.stdout
    assert "| 2 | model/fusion=mean | done |  |" in done.stdout  # job 2 trained no pooled model
    assert out.read_text() == done.stdout


def test_a_folder_without_jobs_is_an_error_that_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        collect_sweep.sweep_table(tmp_path)


@pytest.mark.parametrize("launcher, target", [
    ("parallel", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
])
def test_launcher_configs_compose_with_the_main_config(launcher, target):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}", "experiment=smoke"], return_hydra_config=True)

    assert cfg.hydra.launcher._target_ == target
    assert cfg.federation.rounds == 2  # the job's own config is untouched


def _job_with_sites(sweep, number: int, overrides: list[str], per_site: dict[str, float]):
    _job(sweep, number, overrides, {"federated": {"accuracy": sum(per_site.values()) / len(per_site)}})
    path = sweep / str(number) / "summary.json"
    summary = json.loads(path.read_text())
    summary["sites"] = {site: {"federated": {"accuracy": value}} for site, value in per_site.items()}
    path.write_text(json.dumps(summary))


def test_the_report_plots_each_swept_setting_and_the_best_jobs_per_site(tmp_path):
    _job_with_sites(tmp_path, 0, ["model/fusion=mean", "federation.local_epochs=1"], {"a": 0.5, "b": 0.25})
    _job_with_sites(tmp_path, 1, ["model/fusion=gated", "federation.local_epochs=2"], {"a": 0.75, "b": 0.5})
    _job(tmp_path, 2, ["model/fusion=attention", "federation.local_epochs=3"], None)  # failed: no point, no bar

    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], check=True, capture_output=True, text=True)

    report = (tmp_path / "report" / "sweep.md").read_text()
    assert "![Each swept hyper-parameter against the objective](params.png)" in report
    assert "![Per site, the best jobs](sites.png)" in report
    assert (tmp_path / "report" / "params.png").stat().st_size > 0 and (tmp_path / "report" / "sites.png").stat().st_size > 0
    assert "history.png" not in report  # not a search: no study
    assert done.stdout == collect_sweep.sweep_table(tmp_path)  # stdout is still the table alone


def test_what_cannot_be_plotted_is_said_in_the_report_and_the_table_is_still_written(sweep):
    collect_sweep.main([str(sweep)])  # the fixture's summaries have no per-site figures

    report = (sweep / "report" / "sweep.md").read_text()
    assert "Per site, the best jobs: not drawn (no job reports per-site federated accuracy)." in report
    assert "| 10 | model/fusion=gated | done | 0.500 | 0.750 |" in report


def test_no_plots_writes_the_table_only(sweep):
    assert collect_sweep.main([str(sweep), "--no-plots"]) == 0

    assert not (sweep / "report").exists()
