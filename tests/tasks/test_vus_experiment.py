"""experiment=vus end to end on a small table with its own column names, then scoring VCFs and tables with the run."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from support import ROOT, compose_config
from test_variant_table import RENAME, variant_cfg, write_variant_table

from federation.driver.experiment import run_experiment
from federation.tasks.vus.scoring import score_file, write_scored
from modalities.base import DataError
from modalities.consortium import load_consortium

SMALL = ["seeds=[0]", "federation.rounds=2", "baselines.epochs=2", "progress=false", "data.labs.shares=[0.6,0.4]",
         "data.batch_size=16", "vus_evaluation.calibration.bootstrap=20"]
IN_SILICO = ["SIFT", "FATHMM", "VEST4", "REVEL", "GERP", "phyloP", "EA", "BayesDel", "MutPred2", "CADD", "PolyPhen2", "MPC", "PrimateAI"]
LEVELS = {"uncertain"} | {f"{side}_{level}" for side in ("pathogenic", "benign") for level in ("supporting", "moderate", "strong")}
SHARED = Path(os.environ.get("RAREFED_SHARED_DATA", ROOT.parent / "shared" / "data")) / "variants" / "clinvar_2019_dev.tsv"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, table, run folder, summary) of one small federated run."""
    folder = tmp_path_factory.mktemp("vus")
    table = write_variant_table(folder)
    cfg = variant_cfg(table, *SMALL)
    summary = run_experiment(cfg, folder / "run")
    return cfg, table, folder / "run", summary


def score_cfg(run: Path, source: Path, out: Path, *overrides: str):
    return compose_config([f"run_dir={run}", f"input={source}", f"out_dir={out}", *overrides], config_name="score_vus")


def test_the_run_writes_the_spine_summary_and_what_the_scorer_needs(trained):
    _, _, run, summary = trained

    written = json.loads((run / "summary.json").read_text())

    for name in ("model.safetensors", "config.yaml", "calibration.json", "variant_encoding.json", "reliability.png", "summary.md"):
        assert (run / name).is_file(), name
    assert set(written["sites"]) == {"lab_1", "lab_2"}
    for entry in written["sites"].values():
        assert {"n_train", "n_test", "local", "federated", "pooled"} <= set(entry)
        assert 0.0 <= entry["federated"]["auprc"] <= 1.0 and 0.0 <= entry["federated"]["auroc"] <= 1.0
    assert set(IN_SILICO) | {"MAF"} <= set(written["vus"]["overall"])
    assert written["vus"]["targets"]["best_single_score"] in IN_SILICO  # allele frequency is reported, not a competitor
    assert "### Variant pathogenicity on held-out genes" in (run / "summary.md").read_text()
    assert set(written["vus"]["targets"]) >= {"margin_met", "every_lab_federated_above_local", "best_single_score"}


def test_single_scores_are_measured_on_the_models_test_rows_with_the_training_median(trained):
    cfg, _, _, summary = trained
    consortium = load_consortium(cfg.data, seed=cfg.seed)
    revel = IN_SILICO.index("REVEL") + 1  # MAF is feature 0
    train = np.stack([i["meta"]["raw"] for s in consortium.sites for i in s.splits["train"].items])
    test = [i for s in consortium.sites for i in s.splits["test"].items]
    values = np.array([i["meta"]["raw"][revel] for i in test])
    values = np.where(np.isnan(values), np.nanmedian(train[:, revel]), values)
    labels = [int(i["label"] == 1) for i in test]

    overall = summary["vus"]["overall"]

    assert overall["REVEL"]["n"] == overall["federated"]["n"] == len(test)
    assert overall["REVEL"]["auroc"] == pytest.approx(roc_auc_score(labels, values))
    sift = summary["vus"]["present_rows"]["SIFT"]
    assert sift["n"] == sum(not math.isnan(i["meta"]["raw"][1]) for i in test) < len(test)


def test_a_vcf_is_scored_per_allele_and_annotated(trained, tmp_path):
    _, _, run, _ = trained
    header = "".join(f'##INFO=<ID={f},Number=A,Type=Float,Description="{f}">\n' for f in ["AF", *IN_SILICO])
    damaging = ";".join(f"{f}={-2 if f in ('SIFT', 'FATHMM') else 2}" for f in IN_SILICO)
    harmless = ";".join(f"{f}={2 if f in ('SIFT', 'FATHMM') else -2}" for f in IN_SILICO)
    both = ";".join(f"{f}={v1},{v2}" for f, v1, v2 in zip(IN_SILICO, *zip(*[(-2, 2) if f in ("SIFT", "FATHMM") else (2, -2) for f in IN_SILICO])))
    source = tmp_path / "vus.vcf"
    source.write_text("##fileformat=VCFv4.2\n##contig=<ID=1,length=249250621>\n" + header + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                      f"1\t100\trs1\tA\tG\t.\tPASS\tAF=0;{damaging}\n1\t200\t.\tC\tT\t.\t.\tAF=0.008;{harmless}\n"
                      f"1\t300\t.\tC\tT,G\t.\t.\tAF=.,.;{both}\n1\t400\t.\tG\tA\t.\t.\tAF=0;REVEL=0.9\n")

    scored = score_file(score_cfg(run, source, tmp_path / "out"))
    paths = write_scored(scored, tmp_path / "out", 0.0441)

    table = pd.read_csv(paths["tsv"], sep="\t")
    assert len(table) == 5 and set(table["evidence"]) <= LEVELS
    assert ((table["low"] <= table["probability"]) & (table["probability"] <= table["high"])).all()
    p = table["probability"].tolist()
    assert p[0] > p[1] and p[2] > p[3]  # damaging-looking above harmless-looking, also within a split record
    assert scored.counts["filled_missing"]["MAF"] == 2  # AF '.' -> 0, as the training table records it
    # BayesDel was present in every training row: a variant without it gets no evidence level
    assert table["missing_unseen_in_training"].tolist() == [False, False, False, False, True] and table["evidence"].iloc[4] == "uncertain"
    records = [line.split("\t") for line in paths["vcf"].read_text().splitlines() if not line.startswith("#")]
    assert len(records) == 4 and records[2][7].count("RAREFED_P=") == 1
    info = dict(item.split("=", 1) for item in records[2][7].split(";"))
    assert len(info["RAREFED_P"].split(",")) == 2 and len(info["RAREFED_EVIDENCE"].split(",")) == 2


def test_a_table_is_scored_with_its_own_column_names(trained, tmp_path):
    _, table, run, _ = trained
    rename = "{" + ", ".join(f"{k}: '{v}'" for k, v in RENAME.items()) + "}"  # Hydra's grammar: quoted values, plain keys

    scored = score_file(score_cfg(run, table, tmp_path, f"table.rename={rename}"))
    paths = write_scored(scored, tmp_path, 0.0441)

    assert len(pd.read_csv(paths["tsv"], sep="\t")) == 240
    assert sum(not line.startswith("#") for line in paths["vcf"].read_text().splitlines()) == 240


def test_a_folder_that_is_not_a_variant_run_is_refused(tmp_path):
    with pytest.raises(DataError, match="variant_encoding.json"):
        score_file(score_cfg(tmp_path, tmp_path / "x.vcf", tmp_path))


@pytest.mark.slow
def test_the_score_vus_script_writes_both_files(trained, tmp_path):
    _, _, run, _ = trained
    source = tmp_path / "one.vcf"
    source.write_text("##fileformat=VCFv4.2\n##INFO=<ID=REVEL,Number=A,Type=Float,Description=\"REVEL\">\n"
                      "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n1\t100\t.\tA\tG\t.\t.\tREVEL=0.8\n")
    nulls = ",".join(f"{f}:null" for f in IN_SILICO if f != "REVEL")

    done = subprocess.run([sys.executable, "scripts/score_vus.py", f"run_dir={run}", f"input={source}", f"out_dir={tmp_path}",
                           f"info_fields={{MAF:null,REVEL:REVEL,{nulls}}}"], cwd=ROOT, capture_output=True, text=True)

    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "one.vus.tsv").is_file() and (tmp_path / "one.vus.vcf").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_file(), reason="shared ClinVar table not present")
def test_on_real_clinvar_variants_the_targets_are_met(tmp_path):
    cfg = compose_config(["experiment=vus", f"data.path={SHARED}", "progress=false"])

    summary = run_experiment(cfg, tmp_path)

    targets = summary["vus"]["targets"]
    assert targets["margin_met"], targets
    assert targets["every_lab_federated_above_local"], targets["labs"]


def test_a_gzipped_vcf_is_read_and_annotated(trained, tmp_path):
    import gzip

    _, _, run, _ = trained
    source = tmp_path / "lab.v2.vcf.gz"
    with gzip.open(source, "wt") as handle:
        handle.write("##fileformat=VCFv4.2\n##INFO=<ID=REVEL,Number=A,Type=Float,Description=\"REVEL\">\n"
                     "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n1\t100\t.\tA\tG\t.\t.\tREVEL=0.8\n2\t500\t.\tT\tC\t.\t.\t.\n")
    fields = {f: None for f in ["MAF", *IN_SILICO]} | {"REVEL": "REVEL"}
    cfg = score_cfg(run, source, tmp_path, "info_fields=" + "{" + ",".join(f"{k}:{v or 'null'}" for k, v in fields.items()) + "}")

    paths = write_scored(score_file(cfg), tmp_path, 0.0441)

    assert paths["vcf"].name == "lab.v2.vus.vcf"
    records = [line for line in paths["vcf"].read_text().splitlines() if not line.startswith("#")]
    assert len(records) == 2 and all("RAREFED_P=" in line for line in records)


def test_the_variant_model_scores_diagnosis_candidates(trained):
    """federation/tasks/diagnosis/variant_model.py: a trained variant run gives each candidate row its pathogenicity."""
    from collections import Counter

    from federation.tasks.diagnosis.variant_model import VariantModelPathogenicity
    from models.genotype_likelihood import GenotypeSettings

    _, _, run, _ = trained
    columns = ("valid", "gene", "consequence", "impact", "zygosity", "af_neglog10", "af_missing", "CADD", "CADD_missing", "REVEL", "REVEL_missing")
    damaging = [1, 1, 0, 3, 1, 5.0 / 6, 0, 34.0, 0, 0.95, 0]   # AF 1e-5, CADD 34, REVEL 0.95
    benign = [1, 1, 0, 3, 1, 1.0 / 6, 0, 2.0, 0, 0.02, 0]      # AF 0.1, CADD 2, REVEL 0.02
    nothing = [1, 1, 0, 4, 1, 0, 1, 0, 1, 0, 1]               # no AF, no score: the impact fallback
    counts = Counter()
    model = VariantModelPathogenicity(run)

    s = model(np.array([damaging, benign, nothing], dtype=np.float32), columns, GenotypeSettings(), counts)

    assert 0.0 <= s.min() and s.max() <= 1.0
    assert s[0] > s[1]
    assert s[2] == pytest.approx(0.9)  # HIGH impact, as models/genotype_likelihood.py falls back
    assert counts == Counter({"rows_scored_by_variant_model": 2, "rows_without_variant_model_features": 1, "rows_scored_by_impact_only": 1})
