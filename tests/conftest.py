"""Shared fixtures: the HPO index and a writer for small phenopacket files; experiment tracking off for the suite."""
from __future__ import annotations

import os
from pathlib import Path

import phenopackets as pp
import pytest
from google.protobuf.json_format import MessageToJson

from modalities.hpo import load_hpo_index

# Experiment tracking off for every run of the suite, in process and in the scripts it starts (conf/tracking/mlflow.yaml
# reads RAREFED_TRACKING): MLflow's import and a new store cost seconds a run, and would write under outputs/.
# tests/driver/test_tracking.py turns it on (tracking.enabled=true) where it tests it.
os.environ["RAREFED_TRACKING"] = "false"


@pytest.fixture(scope="session")
def hpo():
    return load_hpo_index()


@pytest.fixture
def write_phenopacket():
    """write(folder, patient_id, observed=(), excluded=(), label=..., age=..., sex=..., files=()) -> Path."""

    def write(
        folder: Path,
        patient_id: str,
        observed=("HP:0001250",),
        excluded=(),
        label: str | None = "OMIM:100100",
        age: str | None = "P3Y6M",
        sex: str = "FEMALE",
        files=(),
    ) -> Path:
        packet = pp.Phenopacket(id=patient_id)
        packet.subject.id = f"subject-{patient_id}"
        packet.subject.sex = pp.Sex.Value(sex)
        if age:
            packet.subject.time_at_last_encounter.age.iso8601duration = age
        for term in observed:
            packet.phenotypic_features.add(type=pp.OntologyClass(id=term))
        for term in excluded:
            packet.phenotypic_features.add(type=pp.OntologyClass(id=term), excluded=True)
        if label:
            packet.interpretations.add(id="i1").diagnosis.disease.id = label
        for uri, attributes in files:
            packet.files.add(uri=uri, file_attributes=attributes)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{patient_id}.json"
        path.write_text(MessageToJson(packet))
        return path

    return write
