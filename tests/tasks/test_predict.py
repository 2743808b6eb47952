"""scripts/predict.py on a tiny trained run: ranked differential, occlusion attributions; and the run's quality.json."""
import json
from pathlib import Path

import pytest
from support import compose_config

from federation.driver.experiment import run_experiment
from federation.predict import predict_patient
from modalities.hpo import load_hpo_index
from modalities.phenopacket_io import read_phenopacket

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    data_dir, out_dir = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("run")
    overrides = ["experiment=smoke", f"paths.data_dir={data_dir}", "progress=false", "federation.rounds=1",
                 "baselines.local=false", "baselines.pooled=false"]
    cfg = compose_config(overrides)
    run_experiment(cfg, out_dir)
    return cfg, out_dir


def _patient_with(cfg, modalities):
    site = next(s for s in cfg.data.generate.sites if set(modalities) <= set(s.modalities))
    folder = Path(cfg.data.root) / site.name
    for path in sorted((folder / "phenopackets").glob("*.json")):
        if all(any((folder / d).glob(path.stem + ".*")) for d in ("vcf",) if "variants" in modalities):
            return path
    raise AssertionError("no such patient")


def test_predict_ranks_and_attributes_every_input(tiny_run):
    cfg, run_dir = tiny_run
    phenopacket = _patient_with(cfg, ["phenotypes", "variants"])
    record = read_phenopacket(phenopacket)

    result = predict_patient(run_dir, phenopacket, top_k=100)

    probabilities = [d["probability"] for d in result["differential"]]
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)  # top_k covers every label here
    assert probabilities == sorted(probabilities, reverse=True)
    attribution = result["attribution"]
    assert attribution["target"] == result["differential"][0]["label"]
    hpo = load_hpo_index()
    expected = {hpo.term_ids[hpo.resolve(t)[0]] for t in record.observed + record.excluded}
    assert {t["term"] for t in attribution["phenotypes"]} == expected
    assert "variants" in result["modalities_present"] and attribution["variants"]
    assert set(attribution["modalities"]) == set(result["modalities_present"])


def test_predict_script_writes_json(tiny_run, tmp_path):
    import runpy
    import sys

    cfg, run_dir = tiny_run
    phenopacket = _patient_with(cfg, ["phenotypes"])
    out = tmp_path / "prediction.json"
    argv, sys.argv = sys.argv, ["predict.py", str(run_dir), str(phenopacket), "--top-k", "3", "--output", str(out)]
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(ROOT / "scripts" / "predict.py"), run_name="__main__")
    finally:
        sys.argv = argv

    assert done.value.code == 0

    written = json.loads(out.read_text())
    assert [d["rank"] for d in written["differential"]] == [1, 2, 3]


def test_run_folder_has_a_quality_report_without_patient_ids(tiny_run):
    cfg, run_dir = tiny_run

    quality = json.loads((run_dir / "quality.json").read_text())

    assert set(quality) == {s.name for s in cfg.data.generate.sites}
    text = (run_dir / "quality.json").read_text()
    for site in cfg.data.generate.sites:
        report = quality[site.name]
        assert report["n_patients"] == sum(report["splits"].values())
        assert set(report["missing"]) == set(site.modalities)
        ids = [p.stem for p in (Path(cfg.data.root) / site.name / "phenopackets").glob("*.json")]
        assert not any(f'"{pid}"' in text for pid in ids)
        assert all(n in ("<5", "suppressed") or n == 0 or n >= 5 for n in report["labels"].values())
    lab_site = next(s for s in cfg.data.generate.sites if "labs" in s.modalities)
    assert quality[lab_site.name]["repairs"]["labs"]["unit_conversions"]["count"] > 0
