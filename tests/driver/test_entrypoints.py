"""The bad-input corpus of the entry points: every command fails on an expected error in one line, with its
documented exit status (federation/entrypoint.py), before it writes anything.

Settings are checked in process against the real config (federation/settings.py); the exit statuses, the
single stderr line and the absent run folder are checked on the scripts themselves, as a user runs them.
"""
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue
from safetensors.torch import save_file
from support import ROOT, compose_config
from test_registry import _history
from test_vus_experiment import score_cfg, trained  # noqa: F401  trained: the module's small experiment=vus run

from federation.driver.experiment import run_experiment
from federation.entrypoint import EXIT_CONFIG, EXIT_INPUT, compose_line, exit_status, one_line, remove_run_folder
from federation.governance.ledger import read_ledger
from federation.governance.registry import Registry
from federation.predict import load_run, patient_inputs
from federation.privacy.hooks import KINDS
from federation.settings import PRIVACY_KINDS, ConfigError, check_training_config
from federation.tasks.vus.scoring import score_file, write_scored
from modalities.base import DataError
from modalities.labs import LabReader
from modalities.phenopacket_io import read_phenopacket

SCRIPTS = ROOT / "scripts"
rollback_script = runpy.run_path(str(SCRIPTS / "rollback.py"))["main"]
verify_script = runpy.run_path(str(SCRIPTS / "verify_ledger.py"))["main"]
feedback_script = runpy.run_path(str(SCRIPTS / "feedback.py"))["main"]
dashboard_script = runpy.run_path(str(SCRIPTS / "dashboard.py"))["main"]
sweep_script = runpy.run_path(str(SCRIPTS / "collect_sweep.py"))["main"]
predict_script = runpy.run_path(str(SCRIPTS / "predict.py"))["main"]
HEART_ROW = "63,1,1,145,233,1,2,150,0,2.3,3,0,6,0\n"


def run_script(name: str, *args: str, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1" if full_error else "0", "RAREFED_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], cwd=ROOT, capture_output=True, text=True, env=env)


def assert_one_line(result: subprocess.CompletedProcess, status: int, *named: str) -> str:
    """The expected status, no traceback, one line on stderr that names each of `named`."""
    assert result.returncode == status, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for text in named:
        assert text in lines[0]
    return lines[0]


def _heart(tmp_path: Path, *sites: tuple[str, str]) -> list[str]:
    """Overrides for the heart experiment on table sites written into tmp_path (no shared data needed)."""
    for name, text in sites:
        (tmp_path / f"{name}.data").write_text(text)
    listed = ", ".join(f"{{name: {n}, path: {n}.data}}" for n, _ in sites)
    return ["experiment=heart_flamby", f"data.root={tmp_path}", f"data.sites=[{listed}]", "torch_threads=1"]


# ---- class 2: start-up validation of the training config, in process ---------------------------------------

BAD_SETTINGS = [
    (["federation.rounds=-1"], "federation.rounds"),  # the local-only baseline trained for max_epochs=-1: forever
    (["federation.rounds=1.5"], "federation.rounds"),
    (["federation.local_epochs=0"], "federation.local_epochs"),  # trained nothing, exit 0
    (["federation.local_steps=0"], "federation.local_steps"),
    (["federation.concurrent_sites=0"], "federation.concurrent_sites"),
    (["data.batch_size=0"], "data.batch_size"),  # crashed every site in round 1
    (["data.batch_size=-4"], "data.batch_size"),
    (["federation.participation.fraction=1.5"], "federation.participation.fraction"),
    (["federation.participation.fraction=0"], "federation.participation.fraction"),
    (["federation.participation.min_sites=0"], "federation.participation.min_sites"),
    (["federation.participation.deadline_s=0"], "federation.participation.deadline_s"),
    (["federation.participation.retries=-1"], "federation.participation.retries"),
    (["+federation.participation.fracton=0.5"], "federation.participation"),  # a typo in a key
    (["federation.validator.max_norm_ratio=1"], "federation.validator.max_norm_ratio"),
    (["federation.validator.min_cosine=2"], "federation.validator.min_cosine"),
    (["privacy=dp_sgd", "privacy.epsilon=0"], "privacy.epsilon"),
    (["privacy=dp_sgd", "privacy.epsilon=-1"], "privacy.epsilon"),
    (["privacy=dp_sgd", "privacy.delta=1"], "privacy.delta"),
    (["privacy=dp_sgd", "privacy.max_grad_norm=0"], "privacy.max_grad_norm"),
    (["privacy=dp_sgd", "privacy.batch_size=0"], "privacy.batch_size"),
    (["privacy=dp_sgd", "privacy.local_epochs=0"], "privacy.local_epochs"),
    (["privacy=dp_sgd", "privacy.lr=0"], "privacy.lr"),
    (["privacy=site_dp", "privacy.clip_norm=0"], "privacy.clip_norm"),
    (["privacy=site_dp", "privacy.sample_rate=1.5"], "privacy.sample_rate"),
    (["privacy=site_dp", "privacy.noise_multiplier=-1"], "privacy.noise_multiplier"),
    (["privacy.kind=dp"], "privacy.kind"),
    (["seeds=[]"], "seeds"),
    (["seeds=[0,0]"], "seeds"),
    (["seed=-1"], "seed"),
    (["torch_threads=0"], "torch_threads"),
    (["baselines.epochs=0"], "baselines.epochs"),
    (["baselines.steps=0"], "baselines.steps"),
    (["federation.rounds=0"], "federation.rounds"),  # the baselines inherit 0 rounds' budget: nothing trained
    (["personalisation.enabled=true", "personalisation.epochs=0"], "personalisation.epochs"),
    (["+data.shards=0"], "data.shards"),
    (["adaptation.methods=[calibrate,apfl]"], "adaptation.methods"),
    (["adaptation.finetune.max_epochs=0"], "adaptation.finetune.max_epochs"),
    (["adaptation.calibration.folds=1"], "adaptation.calibration.folds"),
    (["adaptation.select.fallback=pooled"], "adaptation.select.fallback"),
    (["tracking.uri=ftp://tracker.example"], "tracking.uri"),  # not a store MLflow opens
    (["tracking.connect_timeout_s=0"], "tracking.connect_timeout_s"),
    (["tracking.enabled=maybe"], "tracking.enabled"),
    (["tracking.experiment=''"], "tracking.experiment"),
    (["+tracking.urii=http://tracker.example:5000"], "tracking"),  # a typo in a key
]


@pytest.mark.parametrize("overrides, setting", BAD_SETTINGS, ids=[" ".join(o) for o, _ in BAD_SETTINGS])
def test_a_setting_out_of_range_is_refused_naming_it(overrides, setting):
    cfg = compose_config(overrides)

    with pytest.raises(ConfigError) as refused:
        check_training_config(cfg)

    assert refused.value.setting == setting
    assert str(refused.value).startswith(f"{setting}=")


def test_rounds_zero_with_their_own_baseline_budget_is_accepted():
    check_training_config(compose_config(["federation.rounds=0", "baselines.epochs=2"]))


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_passes_its_own_checks(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    check_training_config(cfg, paths=False)  # the shared data may be absent here


def test_two_sites_with_one_name_are_refused(tmp_path):
    cfg = compose_config(_heart(tmp_path, ("a", HEART_ROW), ("b", HEART_ROW)))
    cfg.data.sites[1].name = "a"  # exit 0 before: one site's patients vanished from the summary

    with pytest.raises(ConfigError, match="unique") as refused:
        check_training_config(cfg)

    assert refused.value.setting == "data.sites"


@pytest.mark.parametrize("name", ["../a", "a/b", " a", "a "])
def test_a_site_name_that_is_not_plain_is_refused(tmp_path, name):
    cfg = compose_config(_heart(tmp_path, ("a", HEART_ROW)))
    cfg.data.sites[0].name = name

    with pytest.raises(ConfigError, match=r"data\.sites\[0\]\.name"):
        check_training_config(cfg)


def test_an_empty_site_list_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="data.sites"):
        check_training_config(compose_config(["experiment=heart_flamby", "data.sites=[]"]))


def test_an_unknown_modality_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    cfg = compose_config([f"data.sites=[{{name: a, path: {tmp_path / 'a'}, modalities: [phenotypes, genome]}}]", "~data.generate"])

    with pytest.raises(ConfigError, match="genome") as refused:
        check_training_config(cfg)

    assert refused.value.setting == "data.sites[0].modalities"


@pytest.mark.parametrize("make, rule", [(None, "no such folder"), ("file", "not a folder")])
def test_a_site_folder_that_is_missing_or_a_file_is_refused(tmp_path, make, rule):
    path = tmp_path / "a"
    if make == "file":
        path.write_text("not a folder")
    cfg = compose_config([f"data.sites=[{{name: a, path: {path}, modalities: [phenotypes]}}]", "~data.generate"])

    with pytest.raises(ConfigError, match=rule):
        check_training_config(cfg)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_site_table_that_is_a_named_pipe_is_refused_without_opening_it(tmp_path):
    cfg = compose_config(_heart(tmp_path, ("a", HEART_ROW)))
    (tmp_path / "a.data").unlink()
    os.mkfifo(tmp_path / "a.data")  # open() would block until a writer came

    with pytest.raises(ConfigError, match="not a regular file"):
        check_training_config(cfg)


def test_a_data_path_that_is_missing_or_unset_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        check_training_config(compose_config(["experiment=vus", f"data.path={tmp_path / 'absent.tsv'}"]))
    with pytest.raises(ConfigError, match="required"):
        check_training_config(compose_config(["data=image_folder"]))


def test_the_config_is_checked_before_any_data_is_generated_or_written(tmp_path):
    cfg = compose_config(["experiment=smoke", f"paths.data_dir={tmp_path / 'data'}", "federation.rounds=-1"])

    with pytest.raises(ConfigError):
        run_experiment(cfg, tmp_path / "run")

    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


def test_the_privacy_kinds_are_the_privacy_hooks_own():
    assert PRIVACY_KINDS == KINDS


# ---- class 1: one line, a documented status, nothing half-written (the scripts themselves) -----------------


@pytest.mark.slow
def test_train_a_bad_setting_is_one_line_status_2_and_no_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    result = run_script("train.py", *_heart(tmp_path, ("a", HEART_ROW)), "federation.participation.fraction=1.5", f"hydra.run.dir={run_dir}")

    assert_one_line(result, EXIT_CONFIG, "federation.participation.fraction=1.5")
    assert not run_dir.exists()


@pytest.mark.slow
def test_train_bad_data_is_one_line_status_1_naming_file_record_and_field(tmp_path):
    run_dir = tmp_path / "run"
    bad = HEART_ROW + "67,1,4,abc,286,0,2,108,1,1.5,2,3,3,2\n"
    result = run_script("train.py", *_heart(tmp_path, ("a", HEART_ROW), ("b", bad)), f"hydra.run.dir={run_dir}")

    assert_one_line(result, EXIT_INPUT, str(tmp_path / "b.data"), "row 2", "trestbps")
    assert "not a number" in result.stderr and "abc" not in result.stderr and not run_dir.exists()  # located, never quoted


@pytest.mark.slow  # several train.py processes; the one-line path itself is covered by the fast tests
def test_hydra_full_error_shows_the_trace_and_still_leaves_no_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    result = run_script("train.py", *_heart(tmp_path, ("a", HEART_ROW)), "data.batch_size=0", f"hydra.run.dir={run_dir}", full_error=True)

    assert result.returncode != 0
    assert "Traceback" in result.stderr and "data.batch_size=0" in result.stderr
    assert not run_dir.exists()


@pytest.mark.slow
def test_score_vus_on_a_missing_input_is_one_line(tmp_path, trained):  # noqa: F811
    _, _, run, _ = trained
    result = run_script("score_vus.py", f"run_dir={run}", f"input={tmp_path / 'absent.vcf'}", f"hydra.run.dir={tmp_path / 'job'}")

    assert_one_line(result, EXIT_CONFIG, "input=", "absent.vcf")
    assert not (tmp_path / "job").exists()


@pytest.mark.slow
def test_a_required_setting_without_a_value_is_one_line(tmp_path):
    result = run_script("score_vus.py", f"input={tmp_path / 'x.vcf'}", f"hydra.run.dir={tmp_path / 'job'}")

    assert_one_line(result, EXIT_CONFIG, "run_dir")
    assert not (tmp_path / "job").exists()


# ---- overrides Hydra cannot compose: one line naming the override, status 2, nothing written ------------------

SLOW = pytest.mark.slow  # one train.py process each; the other scripts' cases cover the same wrapper in the fast suite
COMPOSE_REFUSALS = [
    pytest.param("train.py", "experiment=nope", "available options in 'experiment': ", id="train.py experiment=nope"),  # the options listed
    pytest.param("train.py", "federation.no_such_key=1", "+federation.no_such_key=1", id="train.py federation.no_such_key=1", marks=SLOW),
    pytest.param("train.py", "federation.rounds=[1,", "no viable alternative", id="train.py federation.rounds=[1,", marks=SLOW),  # does not parse
    pytest.param("diagnose.py", "no_such_key=1", "not in struct", id="diagnose.py no_such_key=1"),  # an unknown key
    pytest.param("score_vus.py", "input=[a,", "no viable alternative", id="score_vus.py input=[a,"),  # does not parse
]


@pytest.mark.slow
@pytest.mark.parametrize("name, override, reason", COMPOSE_REFUSALS)
def test_an_override_hydra_cannot_compose_is_one_line_status_2_and_no_run_folder(tmp_path, name, override, reason):
    result = run_script(name, override, f"hydra.run.dir={tmp_path / 'run'}")

    line = assert_one_line(result, EXIT_CONFIG, f"error: {override}: ", reason)
    assert "Config search path" not in line and "HYDRA_FULL_ERROR" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_unknown_group_option_lists_every_option_hydra_offers(tmp_path):
    result = run_script("train.py", "experiment=nope", f"hydra.run.dir={tmp_path / 'run'}")

    offered = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    assert assert_one_line(result, EXIT_CONFIG).endswith(", ".join(offered))


@pytest.mark.slow  # several train.py processes; the one-line path itself is covered by the fast tests
def test_a_refused_override_under_hydra_full_error_shows_hydras_own_output(tmp_path):
    result = run_script("train.py", "experiment=nope", f"hydra.run.dir={tmp_path / 'run'}", full_error=True)

    assert result.returncode != 0 and result.returncode != EXIT_CONFIG
    assert "Traceback" in result.stderr and "MissingConfigException" in result.stderr and "Config search path" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # several train.py processes; the one-line path itself is covered by the fast tests
def test_a_refused_override_with_help_or_in_a_sweep_is_one_line_too(tmp_path):
    helped = run_script("train.py", "--help", "data=nope")
    swept = run_script("train.py", "--multirun", "experiment=smoke,nope", f"hydra.sweep.dir={tmp_path / 'sweep'}")

    assert_one_line(helped, EXIT_CONFIG, "error: data=nope: ", "image_folder")  # was a traceback
    assert_one_line(swept, EXIT_CONFIG, "error: experiment=smoke,nope: ", "heart_flamby")
    assert [p.name for p in (tmp_path / "sweep").iterdir()] == ["multirun.yaml"]  # the sweep's record; no job ran


@pytest.mark.slow
def test_cfg_job_still_prints_the_composed_config_and_writes_no_run_folder(tmp_path):
    result = run_script("train.py", "--cfg", "job", "federation.rounds=3", f"hydra.run.dir={tmp_path / 'run'}")

    assert result.returncode == 0, result.stderr[-2000:]
    assert "rounds: 3" in result.stdout and not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, named", [
    (["data=nope"], "data=nope: In 'train': Could not find 'data/nope'; available options in 'data': breastmnist, heart, image_folder"),
    (["seed=1", "~no_key"], "~no_key: Could not delete from config. 'no_key' does not exist."),
    (["+federation.rounds=3"], "+federation.rounds=3: Could not append to config."),
    (["federation.rounds=2", "hydra/launcher=nope"], "hydra/launcher=nope: In 'hydra/config': Could not find 'hydra/launcher/nope'"),
])  # fmt: skip
def test_a_composition_error_names_the_override_as_typed(monkeypatch, argv, named):
    monkeypatch.setattr(sys, "argv", ["train.py", "--multirun", *argv])

    with pytest.raises(ConfigCompositionException) as refused:
        compose_config(argv)

    assert compose_line(refused.value).startswith(named)
    assert "\n" not in compose_line(refused.value)


def test_a_composition_error_without_a_typed_override_names_the_group_hydra_looked_in(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])

    with pytest.raises(ConfigCompositionException) as refused:
        compose_config(["model=nope"])

    assert compose_line(refused.value).startswith("model: In 'train': Could not find 'model/nope'")


@pytest.mark.slow  # about 12 s, the governance package's imports; the in-process cases below run by default
def test_rollback_of_a_site_that_is_not_a_member_writes_nothing(tmp_path):
    _history(tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in ("ledger.jsonl", "model.safetensors", "registry/current.json")}

    result = run_script("rollback.py", f"run_dir={tmp_path}", "exit_site=genomics_lbs")

    assert_one_line(result, EXIT_CONFIG, "exit_site=genomics_lbs", "not a member")
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


# ---- class 3: governance scripts check their arguments before writing (in process) -------------------------


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args, status, named", [
    (["exit_site=nobody"], EXIT_CONFIG, "exit_site=nobody"),
    (["version=99"], EXIT_CONFIG, "version=99"),
    (["version=one"], EXIT_CONFIG, "version=one"),
])  # fmt: skip
def test_a_governance_typo_is_refused_before_anything_is_written(tmp_path, capsys, args, status, named):
    _history(tmp_path)
    before = _snapshot(tmp_path)

    assert rollback_script([f"run_dir={tmp_path}", *args]) == status

    assert named in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def test_a_site_cannot_leave_twice(tmp_path, capsys):
    _history(tmp_path)
    assert rollback_script([f"run_dir={tmp_path}", "exit_site=c"]) == 0
    entries = len(read_ledger(tmp_path / "ledger.jsonl"))

    assert rollback_script([f"run_dir={tmp_path}", "exit_site=c"]) == EXIT_CONFIG

    assert "left already" in capsys.readouterr().err
    assert len(read_ledger(tmp_path / "ledger.jsonl")) == entries


def test_a_site_exit_whose_restore_would_fail_records_no_exit(tmp_path, capsys):
    _history(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes()[:40])  # truncated
    before = (tmp_path / "ledger.jsonl").read_bytes()

    assert rollback_script([f"run_dir={tmp_path}", "exit_site=c"]) == EXIT_INPUT

    assert "model.safetensors" in capsys.readouterr().err
    assert (tmp_path / "ledger.jsonl").read_bytes() == before
    assert Registry(tmp_path / "registry").current() == 3


@pytest.mark.parametrize("script", [rollback_script, dashboard_script])
def test_a_missing_run_folder_is_named_as_such(tmp_path, capsys, script):
    args = [f"run_dir={tmp_path / 'absent'}"] + (["version=1"] if script is rollback_script else [])

    assert script(args) == EXIT_CONFIG

    err = capsys.readouterr().err
    assert "no such run folder" in err and "ledger" not in err
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize("content, status, words", [
    (b"", EXIT_INPUT, "line 1: empty"),
    (None, EXIT_INPUT, "line 2: not UTF-8"),  # a valid first entry, then a line with a Latin-1 byte (was UnicodeDecodeError)
    (b"{}", EXIT_INPUT, "line 1: truncated"),
])  # fmt: skip
def test_verify_ledger_refuses_an_empty_or_undecodable_ledger(tmp_path, capsys, content, status, words):
    _history(tmp_path)
    ledger = tmp_path / "ledger.jsonl"
    first = ledger.read_bytes().split(b"\n")[0]
    ledger.write_bytes(content if content is not None else first + b'\n{"kind": "caf\xe9"}\n')

    assert verify_script([str(ledger)]) == status

    err = capsys.readouterr().err
    assert words in err and "UnicodeDecodeError" not in err


@pytest.mark.parametrize("kind", ["missing", "folder", "pipe"])
def test_verify_ledger_on_a_path_that_is_not_a_regular_file(tmp_path, capsys, kind):
    path = tmp_path / "ledger.jsonl"
    if kind == "folder":
        path.mkdir()
    elif kind == "pipe":
        os.mkfifo(path)  # must not block

    assert verify_script([str(path)]) == EXIT_CONFIG

    assert str(path) in capsys.readouterr().err


@pytest.fixture
def feedback_site(tmp_path, write_phenopacket):
    site = tmp_path / "site"
    for pid in ("p1", "p2"):
        write_phenopacket(site / "phenopackets", pid, label="OMIM:1")
    run = tmp_path / "run"
    run.mkdir()
    save_file({"w": torch.zeros(4)}, str(run / "model.safetensors"), metadata={"labels": json.dumps(["OMIM:1", "OMIM:2"])})
    return site, run


@pytest.mark.parametrize("damage, status, named", [
    ("truncate", EXIT_INPUT, "model.safetensors"),
    ("delete", EXIT_INPUT, "model.safetensors"),
    ("no_run", EXIT_CONFIG, "run_dir="),
    ("no_site", EXIT_CONFIG, "site_dir="),
])  # fmt: skip
def test_feedback_with_a_damaged_model_or_missing_folder_is_one_line_and_writes_nothing(feedback_site, capsys, damage, status, named):
    site, run = feedback_site
    model = run / "model.safetensors"
    if damage == "truncate":
        model.write_bytes(model.read_bytes()[:-8])
    elif damage == "delete":
        model.unlink()
    run_arg = run.parent / "absent" if damage == "no_run" else run
    site_arg = site.parent / "absent" if damage == "no_site" else site

    status_seen = feedback_script([f"run_dir={run_arg}", f"site_dir={site_arg}", "case=p1", "answer=OMIM:1", "diagnosis=OMIM:2"])

    err = capsys.readouterr().err
    assert status_seen == status and named in err and len(err.strip().splitlines()) == 1
    assert not (site / "feedback.jsonl").exists()


# ---- predict: a file named on the command line is read or refused, never skipped ---------------------------


def test_predict_refuses_a_labs_file_that_does_not_exist(tmp_path, capsys, write_phenopacket):
    phenopacket = write_phenopacket(tmp_path / "site" / "phenopackets", "p1")
    (tmp_path / "run").mkdir()

    assert predict_script([str(tmp_path / "run"), str(phenopacket), "--labs", str(tmp_path / "absent.csv")]) == EXIT_CONFIG

    assert "--labs=" in capsys.readouterr().err


def test_a_missing_explicit_file_is_a_data_error_in_the_library_too(tmp_path, write_phenopacket):
    record = read_phenopacket(write_phenopacket(tmp_path / "site" / "phenopackets", "p1"))

    with pytest.raises(DataError, match="field labs"):
        patient_inputs(record, {"labs": LabReader()}, tmp_path / "site", {"labs": tmp_path / "absent.csv"})


@pytest.mark.parametrize("damage", ["truncate", "delete", "not_safetensors"])
def test_predict_with_a_missing_or_damaged_model_names_the_file(tmp_path, damage):
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    model = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(16)}, str(model), metadata={"labels": "[\"OMIM:1\"]"})
    if damage == "truncate":
        model.write_bytes(model.read_bytes()[:-16])
    elif damage == "delete":
        model.unlink()
    else:
        model.write_text("not a model")

    with pytest.raises(DataError) as refused:
        load_run(tmp_path)

    assert refused.value.path == str(model)


# ---- class 4 of this task: a VCF with a header only is scored as zero variants ----------------------------


def test_a_header_only_vcf_scores_zero_variants_and_writes_empty_outputs(trained, tmp_path):  # noqa: F811
    _, _, run, _ = trained
    source = tmp_path / "none.vcf"
    source.write_text("##fileformat=VCFv4.2\n##INFO=<ID=REVEL,Number=A,Type=Float,Description=\"REVEL\">\n"
                      "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    nulls = ",".join(f"{f}:null" for f in ("MAF", "SIFT", "FATHMM", "VEST4", "GERP", "phyloP", "EA", "BayesDel", "MutPred2", "CADD",
                                            "PolyPhen2", "MPC", "PrimateAI"))

    scored = score_file(score_cfg(run, source, tmp_path, f"info_fields={{REVEL:REVEL,{nulls}}}"))
    paths = write_scored(scored, tmp_path, 0.0441)

    assert scored.counts["variants_scored"] == 0
    assert paths["tsv"].read_text().splitlines()[0].startswith("chrom\tpos\tid\tref\talt")
    assert len(paths["tsv"].read_text().splitlines()) == 1
    assert [line for line in paths["vcf"].read_text().splitlines() if not line.startswith("#")] == []
    assert "##INFO=<ID=RAREFED_P," in paths["vcf"].read_text()


def test_a_header_only_vcf_still_has_its_header_checked(trained, tmp_path):  # noqa: F811
    _, _, run, _ = trained
    source = tmp_path / "none.vcf"
    source.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")

    with pytest.raises(DataError, match="INFO"):
        score_file(score_cfg(run, source, tmp_path))


# ---- the helper itself ----------------------------------------------------------------------------------


def test_exit_statuses_are_the_documented_ones():
    assert exit_status(ConfigError("x", 1, "rule")) == EXIT_CONFIG == 2
    assert exit_status(DataError("f", "bad", record="r", field="x")) == EXIT_INPUT == 1
    assert exit_status(KeyError("k")) == exit_status(FileNotFoundError("f")) == EXIT_INPUT


def test_one_line_folds_lines_caps_length_and_unquotes_key_errors():
    assert one_line(KeyError("unknown site 'x'")) == "unknown site 'x'"
    assert one_line(ValueError("a\nb")) == "a b"
    long = one_line(DataError("f.json", "x" * 5000))
    assert len(long) <= 600 and long.endswith("...")  # a record never floods the terminal or a log


def test_a_config_error_shows_a_long_value_cut_short():
    error = ConfigError("data.sites", ["patient-%d" % i for i in range(100)], "rule")
    assert len(str(error)) < 120


def test_a_failed_jobs_folder_goes_only_when_it_holds_nothing_but_hydras_files(tmp_path):
    hydra_only, mixed = tmp_path / "a", tmp_path / "b"
    for folder in (hydra_only, mixed):
        (folder / ".hydra").mkdir(parents=True)
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            (folder / ".hydra" / name).write_text("x")
    (mixed / "ledger.jsonl").write_text("kept\n")

    remove_run_folder(hydra_only)
    remove_run_folder(mixed)

    assert not hydra_only.exists()
    assert (mixed / "ledger.jsonl").is_file() and (mixed / ".hydra" / "config.yaml").is_file()


def test_collect_sweep_on_a_missing_folder(tmp_path, capsys):
    assert sweep_script([str(tmp_path / "absent")]) == EXIT_CONFIG
    assert "sweep_dir=" in capsys.readouterr().err


def test_the_full_error_flag_raises_in_a_plain_script_too(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")

    with pytest.raises(ConfigError, match="sweep_dir"):
        sweep_script([str(tmp_path / "absent")])


def test_a_setting_left_at_omegaconfs_missing_value_is_a_config_error():
    with pytest.raises(MissingMandatoryValue) as missing:
        OmegaConf.create({"run_dir": "???"}).run_dir

    assert exit_status(missing.value) == EXIT_CONFIG and "run_dir" in one_line(missing.value)
