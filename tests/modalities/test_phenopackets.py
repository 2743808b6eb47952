import json
import random
import re
from pathlib import Path

import pytest
import torch

from modalities.base import DataError
from modalities.phenopacket_io import parse_iso8601_age, read_cohort, read_phenopacket
from modalities.phenotypes import PhenotypeReader

REAL_PHENOPACKETS = Path(__file__).resolve().parents[3] / "shared" / "data" / "phenopackets"
SEIZURE, GDD, HYPOTONIA = "HP:0001250", "HP:0001263", "HP:0001252"


def test_read_phenopacket_fields(tmp_path, write_phenopacket):
    files = [("file:///data/p1.vcf.gz", {"genomeAssembly": "GRCh38"})]
    path = write_phenopacket(
        tmp_path, "p1", observed=(SEIZURE, GDD), excluded=(HYPOTONIA,), label="OMIM:613720", age="P3Y6M", files=files
    )

    record = read_phenopacket(path)

    assert record.patient_id == "p1"
    assert record.label == "OMIM:613720"
    assert record.sex == "FEMALE"
    assert record.age_years == pytest.approx(3.5)
    assert record.observed == (SEIZURE, GDD)
    assert record.excluded == (HYPOTONIA,)
    assert record.files == (("file:///data/p1.vcf.gz", {"genomeAssembly": "GRCh38"}),)
    assert record.source == path


def test_label_falls_back_to_diseases(tmp_path, write_phenopacket):
    path = write_phenopacket(tmp_path, "p1", label=None, age=None)
    packet = json.loads(path.read_text())
    packet["diseases"] = [{"term": {"id": "OMIM:154700", "label": "Marfan syndrome"}}]
    path.write_text(json.dumps(packet))

    record = read_phenopacket(path)

    assert record.label == "OMIM:154700"
    assert record.age_years is None


@pytest.mark.parametrize("text, years", [("P34Y", 34.0), ("P3Y6M", 3.5), ("P10M", 10 / 12), ("P2W", 14 / 365.25)])
def test_iso8601_age(text, years):
    assert parse_iso8601_age(text) == pytest.approx(years)


def test_bad_age_names_the_field(tmp_path, write_phenopacket):
    path = write_phenopacket(tmp_path, "p1", age="three years")

    with pytest.raises(DataError) as err:
        read_phenopacket(path)

    assert err.value.path == str(path) and err.value.field == "subject.timeAtLastEncounter.age.iso8601duration"


def test_phenotypes_signed_indices_and_duplicates(tmp_path, write_phenopacket, hpo):
    write_phenopacket(tmp_path, "p1", observed=(SEIZURE, GDD, SEIZURE), excluded=(HYPOTONIA,))
    write_phenopacket(tmp_path, "p2", observed=(), excluded=())
    records = read_cohort(tmp_path)

    out = PhenotypeReader().read_site(tmp_path, records)

    expected = [hpo.index_of(SEIZURE) + 1, hpo.index_of(GDD) + 1, -(hpo.index_of(HYPOTONIA) + 1)]
    assert out["p1"].dtype == torch.long and out["p1"].tolist() == expected
    assert out["p2"].shape == (0,)
    batch = PhenotypeReader().collate([out["p1"], out["p2"]])
    assert batch.shape == (2, 3) and batch[1].tolist() == [0, 0, 0]


def test_alternative_ids_map_to_current_terms(tmp_path, write_phenopacket, hpo):
    alt_id, current = sorted(hpo.alt_ids.items())[0]
    write_phenopacket(tmp_path, "p1", observed=(alt_id, current))
    reader = PhenotypeReader()

    out = reader.read_site(tmp_path, read_cohort(tmp_path))

    assert out["p1"].tolist() == [hpo.index_of(current) + 1]
    assert reader.stats["alt_ids_mapped"] == 1


def test_unknown_hpo_id_names_file_record_and_field(tmp_path, write_phenopacket):
    path = write_phenopacket(tmp_path, "p1", observed=(SEIZURE, "HP:9999999"))
    records = read_cohort(tmp_path)

    with pytest.raises(DataError) as err:
        PhenotypeReader().read_site(tmp_path, records)

    assert err.value.path == str(path)
    assert err.value.record == "p1"
    assert err.value.field == "phenotypicFeatures[1].type.id"
    assert "HP:9999999" in str(err.value)


def test_unknown_hpo_id_can_be_ignored(tmp_path, write_phenopacket, hpo):
    write_phenopacket(tmp_path, "p1", observed=(SEIZURE, "HP:9999999"))
    reader = PhenotypeReader(unknown_terms="ignore")

    out = reader.read_site(tmp_path, read_cohort(tmp_path))

    assert out["p1"].tolist() == [hpo.index_of(SEIZURE) + 1]
    assert reader.stats["unknown_terms_ignored"] == 1


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "p1.json"
    path.write_text('{\n  "id": "p1",\n  "subject": {"id": "s1",}\n}\n')

    with pytest.raises(DataError) as err:
        read_phenopacket(path)

    assert err.value.path == str(path)
    assert "line 3" in str(err.value)


def test_unknown_field_is_named(tmp_path, write_phenopacket):
    path = write_phenopacket(tmp_path, "p1")
    packet = json.loads(path.read_text())
    packet["phenotypicFeatures"][0]["type"]["colour"] = "red"
    path.write_text(json.dumps(packet))

    with pytest.raises(DataError) as err:
        read_phenopacket(path)

    assert err.value.path == str(path)
    assert err.value.field == "phenotypicFeatures[0].type.colour"


def test_wrong_enum_value_is_named(tmp_path, write_phenopacket):
    path = write_phenopacket(tmp_path, "p1")
    packet = json.loads(path.read_text())
    packet["subject"]["sex"] = "F"
    path.write_text(json.dumps(packet))

    with pytest.raises(DataError) as err:
        read_phenopacket(path)

    assert err.value.field == "subject.sex"


def test_missing_id(tmp_path, write_phenopacket):
    path = write_phenopacket(tmp_path, "p1")
    packet = json.loads(path.read_text())
    del packet["id"]
    path.write_text(json.dumps(packet))

    with pytest.raises(DataError) as err:
        read_phenopacket(path)

    assert err.value.path == str(path) and err.value.field == "id"


def test_read_cohort_recursive_sorted_and_duplicate_ids(tmp_path, write_phenopacket):
    write_phenopacket(tmp_path / "b", "p2")
    write_phenopacket(tmp_path / "a", "p1")
    assert [r.patient_id for r in read_cohort(tmp_path)] == ["p1", "p2"]

    first = tmp_path / "a" / "p1.json"
    second = tmp_path / "c" / "copy.json"
    second.parent.mkdir()
    second.write_text(first.read_text())

    with pytest.raises(DataError) as err:
        read_cohort(tmp_path)

    assert err.value.path == str(second) and err.value.field == "id" and err.value.record == "p1"
    assert str(first) in str(err.value)


@pytest.mark.skipif(not REAL_PHENOPACKETS.is_dir(), reason="real phenopackets not available")
def test_real_phenopackets_sample(tmp_path, hpo):
    cohorts = sorted(p for p in REAL_PHENOPACKETS.iterdir() if p.is_dir())
    rng = random.Random(0)
    files = [rng.choice(sorted(c.glob("*.json"))) for c in rng.sample(cohorts, 30)]

    records = [read_phenopacket(f) for f in files]
    out = PhenotypeReader(unknown_terms="ignore").read_site(tmp_path, records)

    assert all(re.fullmatch(r"OMIM:\d{6}", r.label) for r in records)
    assert all(r.sex in {"MALE", "FEMALE", "UNKNOWN_SEX", "OTHER_SEX"} for r in records)
    terms = [t for r in records for t in r.observed + r.excluded]
    assert len(terms) > 30
    assert sum(hpo.index_of(t) is not None for t in terms) / len(terms) > 0.95
    for r in records:
        known = {hpo.index_of(t) + 1 for t in r.observed if hpo.index_of(t) is not None}
        assert {v for v in out[r.patient_id].tolist() if v > 0} == known
