"""The main job end to end on the tiny consortium: outputs, sweep, determinism and bad input."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import compose_config

from federation.driver.experiment import run_experiment
from modalities.base import DataError

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
OUTPUTS = ("model.safetensors", "metrics.csv", "summary.json", "summary.md", "config.yaml", "quality.json")



@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_config_composes(experiment):
    cfg = compose_config([f"experiment={experiment}", "paths.data_dir=/nonexistent"])

    assert cfg.federation.rounds >= 1
    assert len(cfg.model.encoders) >= 1
    assert cfg.data.loader


@pytest.mark.parametrize("fusion, cls", [("mean", "MaskedMeanFusion"), ("attention", "AttentionFusion"), ("gated", "GatedFusion")])
def test_fusion_choice_composes(fusion, cls):
    cfg = compose_config([f"model/fusion={fusion}"])

    assert cfg.model.fusion._target_ == f"models.fusion.{cls}"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    out_dir = tmp_path_factory.mktemp("run")
    cfg = compose_config(["experiment=smoke", f"paths.data_dir={data_dir}", "progress=false"])
    summary = run_experiment(cfg, out_dir)
    return cfg, out_dir, summary


def test_smoke_run_writes_the_run_folder(smoke_run):
    cfg, out_dir, summary = smoke_run

    for name in OUTPUTS:
        assert (out_dir / name).exists(), name
    on_disk = json.loads((out_dir / "summary.json").read_text())
    assert set(on_disk) == {"task", "metric_names", "sites", "overall", "mean_over_sites", "deployment", "deployed_vs_local"}
    assert set(on_disk["overall"]) == {"local", "federated", "calibrated", "finetuned", "finetuned+calibrated", "local+calibrated", "deployed", "pooled"}
    assert set(on_disk["deployment"]) == set(on_disk["sites"])  # each site's choice, made on its validation split
    for site in on_disk["sites"].values():
        assert site["n_train"] > 0 and site["n_test"] > 0
        assert set(site["federated"]) == set(on_disk["metric_names"])
    rows = (out_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + cfg.federation.rounds * len(on_disk["sites"])


def test_saved_model_holds_the_federated_weights(smoke_run):
    _, out_dir, _ = smoke_run

    state = load_file(str(out_dir / "model.safetensors"))

    assert any(k.startswith("encoders.phenotypes.") for k in state)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.slow  # a multirun of train.py processes
def test_sweep_over_fusions_runs_each_job(tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "experiment=smoke", "model/fusion=mean,gated",
           f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'out'}", "progress=false",
           "baselines.local=false", "baselines.pooled=false", "federation.rounds=1"]

    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=1800)

    summaries = sorted((tmp_path / "out").rglob("summary.json"))
    assert len(summaries) == 2
    targets = {(s.parent / "config.yaml").read_text().count("MaskedMeanFusion") for s in summaries}
    assert targets == {0, 1}


def _first(folder: Path, pattern: str) -> Path:
    return sorted(folder.rglob(pattern))[0]


def _corrupt_phenopacket(site: Path) -> str:
    _first(site, "phenopackets/*.json").write_text('{"id": "x", "subject": {"id": "x"}, "phenotypicFeatures": [}')
    return "phenopackets"


def _unknown_hpo(site: Path) -> str:
    path = _first(site, "phenopackets/*.json")
    data = json.loads(path.read_text())
    data["phenotypicFeatures"][0]["type"]["id"] = "HP:9999999"
    path.write_text(json.dumps(data))
    return "phenotypicFeatures[0].type.id"


def _broken_vcf(site: Path) -> str:
    _first(site, "vcf/*.vcf").write_text("this is not a vcf\n")
    return ".vcf"


def _wrong_image_dims(site: Path) -> str:
    import nibabel as nib
    import numpy as np

    png = _first(site, "images/*.png")
    png.unlink()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), dtype=np.float32), np.eye(4)), str(png.with_suffix(".nii")))
    return "images"


@pytest.mark.parametrize("corrupt", [_corrupt_phenopacket, _unknown_hpo, _broken_vcf, _wrong_image_dims])
def test_bad_input_stops_before_training_and_leaves_no_outputs(smoke_run, tmp_path, corrupt):
    # Prepare: a copy of the smoke consortium with one bad file at a site holding that modality
    cfg, _, _ = smoke_run
    source = Path(cfg.data.root)
    data_root = tmp_path / "consortium"
    shutil.copytree(source, data_root)
    modality = {"_corrupt_phenopacket": "phenotypes", "_unknown_hpo": "phenotypes", "_broken_vcf": "variants", "_wrong_image_dims": "imaging"}[corrupt.__name__]
    site = next(s for s in cfg.data.generate.sites if modality in s.modalities)
    expected_in_message = corrupt(data_root / site.name)
    sites = [f"{{name: {s.name}, path: {data_root / s.name}, modalities: [{','.join(s.modalities)}]}}" for s in cfg.data.generate.sites]
    bad_cfg = compose_config(["experiment=smoke", "~data.generate", f"data.sites=[{','.join(sites)}]", "progress=false"])
    out_dir = tmp_path / "run"

    # Execute
    with pytest.raises(DataError) as error:
        run_experiment(bad_cfg, out_dir)

    # Assert
    assert str(data_root / site.name) in str(error.value)
    assert expected_in_message in str(error.value)
    assert not any((out_dir / name).exists() for name in OUTPUTS)
