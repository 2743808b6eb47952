"""Hostile and malformed site inputs that were once accepted silently, crashed with the wrong message or hung.

Each case starts from test_bad_inputs' small valid site (two patients, every modality) or a tiny file written
by the real library, breaks one thing, and asserts either a DataError naming file, record and field (and never
echoing patient data) or a documented repair that quality.json counts.
"""
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from test_bad_inputs import HEADER, INFO, LABELS, assert_names, edit_packet, error_of, load, site  # noqa: F401  (site: fixture)
from test_image_sites import npz_cfg, write_npz
from test_variant_table import variant_cfg, write_variant_table
from test_vus_vcf import read as read_scoring
from test_vus_vcf import vcf as scoring_vcf

from modalities.base import DataError
from modalities.consortium import load_consortium, load_site_folders
from modalities.dataset import SiteDataset, site_labels
from modalities.duplicates import separate_duplicates
from modalities.image_sites import load_npz_sites, read_npz
from modalities.imaging import ImageReader
from modalities.labs import LabReader, load_default_analytes, parse_analytes
from modalities.phenopacket_io import read_phenopacket
from modalities.site_data import SiteData
from modalities.variant_features import feature_specs
from modalities.variant_table import read_variant_table

SEIZURE = "HP:0001250"


def items_by_id(splits):
    return {item["patient_id"]: item for split in splits.values() for item in split.items}


def write_vcf(path: Path, ref: str = "A", alt: str = "G") -> None:
    path.write_text(HEADER.format(extra="", samples="") + f"chr1\t100\t.\t{ref}\t{alt}\t.\tPASS\t{INFO.format(af='0.001')}\tGT\t0/1\n")


# --- phenopackets: ids and labels ------------------------------------------------------------------

def test_a_diagnosis_id_in_another_case_is_the_same_class_and_counted(site):
    edit_packet(site / "phenopackets" / "p1.json", lambda d: d["interpretations"][0]["diagnosis"]["disease"].update(id="omim:100100"))

    splits, report = load(site)

    assert site_labels(site) == {"OMIM:100100", "OMIM:200200"}  # not a third class
    assert items_by_id(splits)["p1"]["label"] == LABELS.index("OMIM:100100")
    assert report["repairs"]["phenopackets"]["diagnosis_id_normalised"] == {"count": 1, "details": {"omim: -> OMIM:": 1}}


def test_a_patient_id_with_surrounding_whitespace_keeps_its_files_and_is_counted(site):
    edit_packet(site / "phenopackets" / "p1.json", lambda d: d.update(id=" p1\t"))

    splits, report = load(site)

    assert set(items_by_id(splits)["p1"]["inputs"]) == {"phenotypes", "variants", "imaging", "labs"}  # nothing lost
    assert report["repairs"]["phenopackets"]["patient_id_whitespace_stripped"]["count"] == 1


@pytest.mark.parametrize("bad_id", ["../p1", "a/b", "a\\b", "..", "p\x001"])
def test_a_patient_id_that_cannot_name_a_file_is_refused(site, bad_id):
    path = site / "phenopackets" / "p1.json"
    edit_packet(path, lambda d: d.update(id=bad_id))

    error = error_of(site)

    assert_names(error, path, None, "id")
    assert "cannot name a file" in str(error)


# --- phenopackets: crashes with the wrong message --------------------------------------------------

@pytest.mark.parametrize("text", ["[" * 10_000 + "]" * 10_000, '{"id": "p1", "subject": ' + '{"x": ' * 10_000 + "1" + "}" * 10_001])
def test_json_nested_ten_thousand_deep_names_the_file(site, text):
    path = site / "phenopackets" / "p1.json"
    path.write_text(text)

    error = error_of(site)

    assert_names(error, path, None, None)
    assert "nested too deeply" in str(error)


def test_a_phenopacket_linked_to_itself_names_the_file(site):
    path = site / "phenopackets" / "p3.json"
    path.symlink_to(path)

    error = error_of(site)

    assert_names(error, path, None, None)
    assert "link" in str(error)


def test_a_phenopacket_that_is_a_json_list_says_so_without_echoing_the_record(site):
    path = site / "phenopackets" / "p1.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps([record]))

    message = str(error_of(site))

    assert str(path) in message and "JSON list" in message
    assert SEIZURE not in message and "FEMALE" not in message and "unhashable" not in message


@pytest.mark.parametrize(
    "change, field, secret",
    [
        (lambda d: d["subject"].update(sex="FEMALE_SECRET"), "subject.sex", "FEMALE_SECRET"),
        (lambda d: d.update(phenotypicFeatures={"type": {"id": "HP:0001250", "label": "Seizure"}}), "phenotypicFeatures", "Seizure"),
        (lambda d: d["subject"].update(timeAtLastEncounter=[{"age": "P3Y"}]), "timeAtLastEncounter", "P3Y"),
        (lambda d: d["subject"].update(dateOfBirth="1984-13-45T00:00:00Z"), "subject.dateOfBirth", "1984"),
    ],
)
def test_a_schema_error_names_the_field_but_not_the_patients_values(site, change, field, secret):
    path = site / "phenopackets" / "p1.json"
    edit_packet(path, change)

    error = error_of(site)

    assert str(path) in str(error) and field in (error.field or "")
    assert secret not in str(error)


def test_an_age_that_is_not_a_duration_is_named_but_not_quoted(site):
    path = site / "phenopackets" / "p1.json"
    edit_packet(path, lambda d: d["subject"]["timeAtLastEncounter"]["age"].update(iso8601duration="P3Q7Y"))

    error = error_of(site)

    assert_names(error, path, "p1", "subject.timeAtLastEncounter.age.iso8601duration")
    assert "P3Q7Y" not in str(error)


# --- named pipes: refused before open() blocks -------------------------------------------------------

@pytest.mark.parametrize(
    "where, record",
    [("phenopackets/p3.json", None), ("vcf/p1.vcf", "p1"), ("images/p1.png", "p1"), ("labs.csv", None), ("split.csv", None)],
)
def test_a_named_pipe_in_place_of_a_file_is_refused_not_opened(site, where, record):
    path = site / where
    if path.exists():
        path.unlink()
    os.mkfifo(path)

    error = error_of(site)

    assert_names(error, path, record, None)
    assert "named pipe" in str(error)


def test_a_named_pipe_as_the_vcf_to_score_is_refused(tmp_path):
    os.mkfifo(tmp_path / "in.vcf")

    with pytest.raises(DataError, match="named pipe"):
        read_scoring(tmp_path / "in.vcf")


# --- VCF alleles -------------------------------------------------------------------------------------

@pytest.mark.parametrize("ref, alt, field", [("Q", "G", "REF"), ("12", "G", "REF"), ("A", "A", "ALT"), ("ACG", "acg", "ALT"), ("A", "G7", "ALT")])
def test_a_vcf_record_whose_ref_is_not_bases_or_alt_is_ref_is_refused(site, ref, alt, field):
    path = site / "vcf" / "p1.vcf"
    write_vcf(path, ref, alt)

    assert_names(error_of(site), path, "p1 chr1:100", field)


@pytest.mark.parametrize("alt", ["<DEL>", "*", "G]17:198982]", "AT"])
def test_symbolic_breakend_and_indel_alleles_are_still_read(site, alt):
    write_vcf(site / "vcf" / "p1.vcf", "A", alt)

    splits, _ = load(site)

    assert items_by_id(splits)["p1"]["inputs"]["variants"].shape[0] == 1


@pytest.mark.parametrize("ref, alt, field", [("Q", "G", "REF"), ("C", "C", "ALT")])
def test_a_vcf_to_score_with_a_bad_allele_is_refused(tmp_path, ref, alt, field):
    path = scoring_vcf(tmp_path, ["1\t100\t.\tA\tG\t.\t.\tAF=0.1;REVEL=0.5", f"1\t200\t.\t{ref}\t{alt}\t.\t.\tAF=0.1;REVEL=0.5"])

    with pytest.raises(DataError) as err:
        read_scoring(path)

    assert err.value.field == field and "1:200" in err.value.record


# --- images ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (2, 8), (8, 3)])
def test_a_tiny_image_is_refused_not_stretched(site, shape):
    path = site / "images" / "p1.png"
    Image.fromarray(np.zeros(shape, dtype=np.uint8)).save(path)

    error = error_of(site)
    splits, _ = load(site, imaging=ImageReader(spatial_size=(8, 8), min_size=1))  # the threshold is configurable

    assert_names(error, path, "p1", "spatial_size")
    assert "min_size" in str(error)
    assert items_by_id(splits)["p1"]["inputs"]["imaging"].shape == (1, 8, 8)


def test_an_npz_of_tiny_images_is_refused_naming_the_array(tmp_path):
    path = write_npz(tmp_path / "tiny.npz", spatial=(3, 3))

    with pytest.raises(DataError) as err:
        load_npz_sites(npz_cfg(path), seed=0)

    assert err.value.path == str(path) and err.value.field == "train_images" and "min_size" in str(err.value)


def test_a_four_dimensional_nifti_is_called_four_dimensional(site):
    (site / "images" / "p1.png").unlink()
    path = site / "images" / "p1.nii"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 2), dtype=np.float32), np.eye(4)), str(path))

    error = error_of(site)

    assert_names(error, path, "p1", "spatial_dims")
    assert "4-D image" in str(error) and "3D image" not in str(error)


def test_an_npz_with_a_pickled_object_array_names_the_array(tmp_path):
    path = tmp_path / "images.npz"
    arrays = {f"{s}_{k}": np.zeros((4, 8, 8) if k == "images" else 4, dtype=np.uint8) for s in ("train", "val", "test") for k in ("images", "labels")}
    arrays["val_labels"] = np.array([{"patient": "x"}] * 4, dtype=object)
    np.savez(path, **arrays)

    with pytest.raises(DataError) as err:
        read_npz(path)

    assert err.value.field == "val_labels" and "pickled" in str(err.value) and str(path) in str(err.value)


# --- labs --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["-3.0,mmol/L", "1e9,mmol/L", "-50,mg/dL"])
def test_an_impossible_lab_value_is_dropped_and_counted_not_averaged(site, bad):
    (site / "labs.csv").write_text(f"patient_id,analyte,value,unit\np1,glucose,5.0,mmol/L\np1,glucose,{bad}\np2,glucose,90,mg/dL\n")
    glucose = next(a for a in parse_analytes(load_default_analytes()) if a.name == "glucose")

    splits, report = load(site)

    labs = items_by_id(splits)["p1"]["inputs"]["labs"]
    assert labs[LabReader().analyte_names.index("glucose")].item() == pytest.approx(glucose.standardise(5.0))  # the real row alone
    assert report["repairs"]["labs"]["implausible_values_dropped"] == {"count": 1, "details": {"glucose": 1}}
    assert "duplicate_rows_averaged" not in report["repairs"]["labs"]


def test_an_impossible_lab_value_is_refused_when_configured(site):
    path = site / "labs.csv"
    path.write_text("patient_id,analyte,value,unit\np1,glucose,5.0,mmol/L\np2,glucose,1e9,mmol/L\n")

    error = error_of(site, labs=LabReader(implausible_values="error"))

    assert_names(error, path, "row 3 (p2)", "value")
    assert "plausible" in str(error) and "1e9" not in str(error) and "1000000000" not in str(error)


def test_an_impossible_phenopacket_measurement_is_dropped_and_counted(site):
    quantity = {"unit": {"id": "UCUM:mmol/L", "label": "mmol/L"}, "value": -4.0}
    edit_packet(site / "phenopackets" / "p1.json", lambda d: d.update(
        measurements=[{"assay": {"id": "LOINC:2345-7", "label": "Glucose"}, "value": {"quantity": quantity}}]))

    splits, report = load(site, labs=LabReader(source="phenopacket", assays={"LOINC:2345-7": "glucose"}))

    assert "labs" not in items_by_id(splits)["p1"]["inputs"]
    assert report["repairs"]["labs"]["implausible_values_dropped"]["count"] == 1


def test_plausible_bounds_must_enclose_the_reference_interval():
    with pytest.raises(ValueError, match="plausible"):
        parse_analytes({"glucose": {"unit": "mmol/L", "low": 3.9, "high": 5.6, "plausible": [4.0, 100.0]}})


# --- the same content at several sites -----------------------------------------------------------------

def two_sites(tmp_path, write_phenopacket, split_b: str):
    """Sites a and b; b's patient b2 is a's training patient a1 under another id, in b's `split_b` split."""
    for name, patients in (("a", {"a1": ("HP:0001250", "train"), "a2": ("HP:0001263", "test")}),
                           ("b", {"b1": ("HP:0002360", "train"), "b2": ("HP:0001250", split_b)})):
        for pid, (term, _) in patients.items():
            write_phenopacket(tmp_path / name / "phenopackets", pid, observed=(term,))
        (tmp_path / name / "split.csv").write_text("patient_id,split\n" + "".join(f"{p},{s}\n" for p, (_, s) in patients.items()))
    return OmegaConf.create({
        "sites": [{"name": n, "path": str(tmp_path / n), "modalities": ["phenotypes"]} for n in ("a", "b")],
        "readers": {"phenotypes": {"_target_": "modalities.phenotypes.PhenotypeReader"}},
    })


def test_an_identical_phenopacket_at_two_sites_is_counted_and_kept_out_of_the_other_sites_test(tmp_path, write_phenopacket):
    consortium = load_site_folders(two_sites(tmp_path, write_phenopacket, "test"), seed=0)

    b = next(s for s in consortium.sites if s.name == "b")
    assert b.splits["test"].patient_ids == []  # b2 is a1: seen in training at site a
    assert consortium.quality["all_sites"]["duplicates"] == {
        "same_content_at_several_sites": 1, "removed_from_evaluation_seen_in_training": 1,
    }


def test_an_identical_phenopacket_in_training_at_both_sites_is_counted_and_kept(tmp_path, write_phenopacket):
    consortium = load_site_folders(two_sites(tmp_path, write_phenopacket, "train"), seed=0)

    assert sorted(sum((s.splits["train"].patient_ids for s in consortium.sites), [])) == ["a1", "b1", "b2"]
    assert consortium.quality["all_sites"]["duplicates"] == {"same_content_at_several_sites": 1}


def test_separate_duplicates_removes_evaluation_copies_of_training_content_and_counts_conflicts():
    def site(name, **splits):
        return SiteData(name, ("tabular",), {s: SiteDataset([{"patient_id": k, "label": y} for k, y in rows], ["tabular"]) for s, rows in splits.items()})

    sites = [site("lab_1", train=[("v1", 0), ("v2", 1)], test=[("v3", 0)]), site("lab_2", train=[("v4", 0)], val=[("v1", 1)], test=[("v3", 1)])]

    out, counts = separate_duplicates(sites, lambda lab, item: item["patient_id"])

    assert [i["patient_id"] for i in out[1].splits["val"].items] == []  # v1 trained at lab_1
    assert [i["patient_id"] for i in out[1].splits["test"].items] == ["v3"]  # only ever evaluated: kept
    assert counts == {"same_content_at_several_sites": 2, "conflicting_labels": 2, "removed_from_evaluation_seen_in_training": 1}


def test_a_variant_at_two_labs_with_conflicting_labels_is_counted_and_never_on_both_sides(tmp_path):
    path = write_variant_table(tmp_path, n_genes=12, per_gene=6)
    lines = path.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    copies = [r.split("\t") for r in rows[:6]]  # gene G00's variants again, under another gene name and the other label
    for cells in copies:
        cells[0], cells[5] = "G99", {"P": "B", "LP": "LB", "B": "P", "LB": "LP"}[cells[5]]
    path.write_text("\n".join([header, *rows, *("\t".join(c) for c in copies)]) + "\n")
    cfg = variant_cfg(path, "data.labs.shares=[0.5,0.5]")

    consortium = load_consortium(cfg.data, seed=0)

    duplicates = consortium.quality["all_sites"]["duplicates"]
    assert duplicates["conflicting_labels"] == 6
    sides = {}
    for lab in consortium.sites:
        for split, dataset in lab.splits.items():
            for item in dataset.items:
                sides.setdefault(item["patient_id"].split("/", 1)[1], set()).add(split == "train")
    assert all(len(s) == 1 for s in sides.values())  # no variant both trained on and evaluated


# --- ClinVar significance ---------------------------------------------------------------------------

CLINVAR_MAPPING = {"Pathogenic": "pathogenic", "Likely_pathogenic": "pathogenic", "Pathogenic/Likely_pathogenic": "pathogenic",
                   "Benign": "benign", "Likely_benign": "benign", "Benign/Likely_benign": "benign"}
SPECS = feature_specs({"REVEL": {"column": "REVEL"}})


def clinvar_table(tmp_path, *significances):
    path = tmp_path / "clinvar.tsv"
    path.write_text("gene\tclnsig\tREVEL\n" + "".join(f"G{i}\t{s}\t0.5\n" for i, s in enumerate(significances)))
    return path


def read_clinvar(path, **kwargs):
    return read_variant_table(path, SPECS, {"gene": "gene", "label": "clnsig"}, label_mapping=CLINVAR_MAPPING, **kwargs)


def test_composite_clinvar_significances_follow_the_primary_and_non_classes_are_excluded_and_counted(tmp_path):
    path = clinvar_table(tmp_path, "Benign/Likely_benign,_risk_factor", "Pathogenic|drug_response", "Pathogenic/Likely_pathogenic/Pathogenic,_low_penetrance",
                         "Uncertain_significance", "Conflicting_interpretations_of_pathogenicity", "Likely_benign",
                         "Likely pathogenic; risk factor", "Uncertain significance")

    rows = read_clinvar(path)

    assert rows.labels == ["benign", "pathogenic", "pathogenic", "benign", "pathogenic"]
    assert rows.records == ["row 2", "row 3", "row 4", "row 7", "row 8"]  # records keep their line in the file
    counts = rows.counts.as_dict()
    assert counts["label_from_primary_significance"]["count"] == 4
    assert counts["rows_excluded_not_a_class"] == {
        "count": 3, "details": {"Conflicting_interpretations_of_pathogenicity": 1, "Uncertain significance": 1, "Uncertain_significance": 1}
    }


def test_strict_labels_refuse_a_composite_significance(tmp_path):
    path = clinvar_table(tmp_path, "Benign", "Benign/Likely_benign,_risk_factor")

    with pytest.raises(DataError) as err:
        read_clinvar(path, label_policy="strict")

    assert_names(err.value, path, "row 3", "clnsig")


def test_an_unknown_significance_is_refused_under_the_clinvar_convention_too(tmp_path):
    path = clinvar_table(tmp_path, "Benign", "Pathogneic,_risk_factor")

    with pytest.raises(DataError) as err:
        read_clinvar(path)

    assert_names(err.value, path, "row 3", "clnsig")


def test_the_vus_experiment_counts_excluded_clinvar_rows_in_quality(tmp_path):
    path = write_variant_table(tmp_path, n_genes=12, per_gene=6)
    lines = path.read_text().splitlines()
    extra = lines[1].split("\t")
    extra[2], extra[5] = "999999", "Uncertain_significance"
    composite = lines[2].split("\t")
    composite[2], composite[5] = "999998", "B,_risk_factor"
    path.write_text("\n".join([*lines, "\t".join(extra), "\t".join(composite)]) + "\n")

    consortium = load_consortium(variant_cfg(path, "data.labs.shares=[0.5,0.5]").data, seed=0)

    repairs = consortium.quality["all_sites"]["repairs"]["tabular"]
    assert repairs["rows_excluded_not_a_class"]["count"] == 1
    assert repairs["label_from_primary_significance"]["details"] == {"B,_risk_factor -> B": 1}
    assert sum(len(split) for s in consortium.sites for split in s.splits.values()) == 12 * 6 + 1


def test_read_phenopacket_refuses_a_directory_named_like_a_file(tmp_path):
    (tmp_path / "p1.json").mkdir()

    with pytest.raises(DataError, match="folder"):
        read_phenopacket(tmp_path / "p1.json")
