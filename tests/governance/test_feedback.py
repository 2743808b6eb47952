"""Clinician feedback: validated at the site, kept there, moved into the next validation set, counted."""
import json
import runpy

import pytest
import torch
from safetensors.torch import save_file
from support import ROOT

from federation.governance.feedback import feedback_counts, record_feedback
from modalities.base import DataError
from modalities.dataset import load_site
from modalities.feedback import FEEDBACK_FILE
from modalities.labels import LabelSpace
from modalities.phenotypes import PhenotypeReader
from modalities.site_data import SiteData

feedback_script = runpy.run_path(str(ROOT / "scripts" / "feedback.py"))["main"]
LABELS = ["OMIM:1", "OMIM:2", "OMIM:3"]
PATIENTS = {f"p{i}": LABELS[i % 2] for i in range(10)}


@pytest.fixture
def site(tmp_path, write_phenopacket):
    folder = tmp_path / "site"
    for pid, label in PATIENTS.items():
        write_phenopacket(folder / "phenopackets", pid, label=label)
    (folder / "split.csv").write_text("patient_id,split\n" + "".join(f"{p},{'train' if i < 6 else 'val' if i < 8 else 'test'}\n" for i, p in enumerate(PATIENTS)))
    return folder


@pytest.fixture
def run_dir(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    save_file({"w": torch.zeros(1)}, str(folder / "model.safetensors"), metadata={"labels": json.dumps(LABELS)})
    return folder


def _load(site):
    return load_site(site, ["phenotypes"], {"phenotypes": PhenotypeReader()}, LabelSpace(LABELS), seed=0)


def test_a_feedback_case_moves_into_validation_with_its_confirmed_diagnosis(site, hpo):
    record_feedback(site, "p1", "OMIM:2", "OMIM:3", "gene panel confirmed", LABELS)  # p1 trains under OMIM:2 so far

    splits = _load(site)

    val = {item["patient_id"]: item for item in splits["val"]}
    assert "p1" in val and "p1" not in splits["train"].patient_ids
    assert val["p1"]["label"] == LABELS.index("OMIM:3")
    assert val["p1"]["meta"]["feedback"] is True
    assert sorted(splits["val"].patient_ids) == ["p1", "p6", "p7"]
    assert feedback_counts(type("C", (), {"sites": [SiteData("s", ("phenotypes",), splits)]})()) == {"s": 1}


@pytest.mark.parametrize(
    ("case", "diagnosis", "field"),
    [("nobody", "OMIM:1", "case_id"), ("p2", "OMIM:999", "confirmed_diagnosis")],
)
def test_bad_feedback_is_refused_naming_file_and_field(site, case, diagnosis, field):
    with pytest.raises(DataError) as caught:
        record_feedback(site, case, "OMIM:2", diagnosis, "", LABELS)

    assert caught.value.field == field
    assert caught.value.path == str(site / FEEDBACK_FILE)
    assert not (site / FEEDBACK_FILE).exists()


def test_a_case_is_reported_once(site):
    record_feedback(site, "p2", "OMIM:1", "OMIM:2", "", LABELS)
    before = (site / FEEDBACK_FILE).read_text()

    with pytest.raises(DataError, match="already has feedback"):
        record_feedback(site, "p2", "OMIM:1", "OMIM:3", "", LABELS)

    assert (site / FEEDBACK_FILE).read_text() == before


def test_a_hand_edited_feedback_file_stops_the_load(site, hpo):
    (site / FEEDBACK_FILE).write_text(json.dumps({"case_id": "p3", "model_answer": "OMIM:1", "confirmed_diagnosis": "OMIM:7"}) + "\n")

    with pytest.raises(DataError, match=r"feedback.jsonl: record line 1: field confirmed_diagnosis"):
        _load(site)


def test_feedback_script(site, run_dir, capsys):
    ok = feedback_script([f"run_dir={run_dir}", f"site_dir={site}", "case=p4", "answer=OMIM:1", "diagnosis=OMIM:3", "comment=MECP2 variant"])
    refused = feedback_script([f"run_dir={run_dir}", f"site_dir={site}", "case=p5", "answer=OMIM:1", "diagnosis=OMIM:9"])

    assert ok == 0 and refused == 1
    assert "field confirmed_diagnosis" in capsys.readouterr().err
    lines = (site / FEEDBACK_FILE).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["comment"] == "MECP2 variant"
