"""A corpus of malformed site inputs: each stops with a DataError that names the file, the record and the
field, or is a documented repair that the site's quality report counts. Nothing is dropped silently.

Each case starts from a small valid site (two patients, every modality) built in tmp_path and breaks one thing.
"""
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from modalities.base import DataError
from modalities.dataset import load_site
from modalities.imaging import ImageReader
from modalities.labels import LabelSpace
from modalities.labs import LabReader
from modalities.phenotypes import PhenotypeReader
from modalities.quality import ReadStats, site_quality
from modalities.variants import VariantReader

SEIZURE = "HP:0001250"
OBSOLETE_REPLACED, REPLACEMENT = "HP:0000057", "HP:0008665"  # obsolete Clitoromegaly, replaced_by in hp.obo
OBSOLETE_NO_REPLACEMENT = "HP:0000489"
LABELS = LabelSpace(["OMIM:100100", "OMIM:200200"])
MODALITIES = ("phenotypes", "variants", "imaging", "labs")
HEADER = """##fileformat=VCFv4.2
{extra}##INFO=<ID=GENE,Number=1,Type=String,Description="Gene symbol">
##INFO=<ID=CSQ,Number=.,Type=String,Description="SO consequence">
##INFO=<ID=IMPACT,Number=1,Type=String,Description="Impact">
##INFO=<ID=AF,Number=A,Type=Float,Description="Population allele frequency">
##INFO=<ID=CADD,Number=1,Type=Float,Description="CADD phred">
##INFO=<ID=REVEL,Number=1,Type=Float,Description="REVEL">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1{samples}
"""
INFO = "GENE=SCN1A;CSQ=missense_variant;IMPACT=MODERATE;AF={af};CADD=20;REVEL=0.5"


def vcf(records=(("G", "0.001", "0/1"),), extra="", samples=""):
    rows = "".join(f"chr1\t{100 + i}\t.\tA\t{alt}\t.\tPASS\t{INFO.format(af=af)}\tGT\t{gt}\n" for i, (alt, af, gt) in enumerate(records))
    return HEADER.format(extra=extra, samples=samples) + rows


@pytest.fixture
def site(tmp_path, write_phenopacket):
    """A valid site: p1 and p2 with phenopackets, VCFs, grey PNGs and labs."""
    root = tmp_path / "site"
    for pid, label in (("p1", "OMIM:100100"), ("p2", "OMIM:200200")):
        write_phenopacket(root / "phenopackets", pid, observed=(SEIZURE,), label=label)
        (root / "vcf").mkdir(parents=True, exist_ok=True)
        (root / "vcf" / f"{pid}.vcf").write_text(vcf())
        (root / "images").mkdir(exist_ok=True)
        Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(root / "images" / f"{pid}.png")
    (root / "labs.csv").write_text("patient_id,analyte,value,unit\np1,glucose,5.0,mmol/L\np2,glucose,90,mg/dL\n")
    return root


def readers(**overrides):
    base = {"phenotypes": PhenotypeReader(), "variants": VariantReader(), "imaging": ImageReader(spatial_size=(8, 8)), "labs": LabReader()}
    return {**base, **overrides}


def load(site, **overrides):
    """(splits, quality report) of the site, as load_site_folders computes them."""
    r, stats = readers(**overrides), ReadStats()
    splits = load_site(site, MODALITIES, r, LABELS, seed=0, stats=stats)
    return splits, site_quality(site, splits, MODALITIES, r, LABELS.labels, min_count=5, phenopacket_stats=stats)


def error_of(site, **overrides) -> DataError:
    with pytest.raises(DataError) as err:
        load(site, **overrides)
    return err.value


def assert_names(error: DataError, path: Path, record: str | None, field: str | None):
    """The message names the file, the record and the field (those that exist for this kind of fault)."""
    message = str(error)
    assert str(path) in message and error.path == str(path)
    if record is not None:
        assert record in message and record in (error.record or "")
    if field is not None:
        assert field in message and field in (error.field or "")


def edit_packet(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_the_valid_site_loads_with_nothing_repaired(site):
    splits, report = load(site)

    assert report["n_patients"] == 2
    assert report["repairs"]["labs"]["unit_conversions"]["count"] == 1  # the mg/dL row
    assert report["labels"] == {"OMIM:100100": "<5", "OMIM:200200": "<5"}


# --- phenopackets ---------------------------------------------------------------------------------

def test_truncated_json(site):
    path = site / "phenopackets" / "p1.json"
    path.write_text(path.read_text()[:40])

    error = error_of(site)

    assert_names(error, path, None, None)  # no record can be read from a truncated file: the line is named
    assert "invalid JSON at line" in str(error)


def test_phenopacket_without_diagnosis(site):
    path = site / "phenopackets" / "p1.json"
    edit_packet(path, lambda d: d.pop("interpretations"))

    assert_names(error_of(site), path, "p1", "interpretations[0].diagnosis.disease.id")


def test_hpo_id_that_does_not_exist(site):
    path = site / "phenopackets" / "p1.json"
    edit_packet(path, lambda d: d["phenotypicFeatures"][0]["type"].update(id="HP:9999999"))

    error = error_of(site)

    assert_names(error, path, "p1", "phenotypicFeatures[0].type.id")
    assert "HP:9999999" in str(error)


def test_obsolete_hpo_id_with_replacement_is_mapped_and_counted(site, hpo):
    edit_packet(site / "phenopackets" / "p1.json", lambda d: d["phenotypicFeatures"][0]["type"].update(id=OBSOLETE_REPLACED))

    splits, report = load(site)

    terms = {item["patient_id"]: item["inputs"]["phenotypes"].tolist() for s in splits.values() for item in s.items}
    assert terms["p1"] == [hpo.index_of(REPLACEMENT) + 1]
    assert report["repairs"]["phenotypes"]["obsolete_ids_replaced"] == {
        "count": 1, "details": {f"{OBSOLETE_REPLACED} -> {REPLACEMENT}": 1}
    }


def test_obsolete_hpo_id_without_replacement(site):
    path = site / "phenopackets" / "p1.json"
    edit_packet(path, lambda d: d["phenotypicFeatures"].append({"type": {"id": OBSOLETE_NO_REPLACEMENT}}))

    error = error_of(site)
    _, report = load(site, phenotypes=PhenotypeReader(obsolete_terms="drop"))

    assert_names(error, path, "p1", "phenotypicFeatures[1].type.id")
    assert "obsolete" in str(error)
    assert report["repairs"]["phenotypes"]["obsolete_terms_dropped"]["count"] == 1


def test_alternative_hpo_id_is_mapped_and_counted(site, hpo):
    alt_id = sorted(hpo.alt_ids)[0]
    edit_packet(site / "phenopackets" / "p2.json", lambda d: d["phenotypicFeatures"][0]["type"].update(id=alt_id))

    _, report = load(site)

    assert report["repairs"]["phenotypes"]["alt_ids_mapped"]["count"] == 1


def test_duplicate_patient_ids(site):
    path = site / "phenopackets" / "p2.json"
    edit_packet(path, lambda d: d.update(id="p1"))

    assert_names(error_of(site), path, "p1", "id")


def test_empty_site(tmp_path):
    (tmp_path / "empty" / "phenopackets").mkdir(parents=True)

    error = error_of(tmp_path / "empty")

    assert_names(error, tmp_path / "empty" / "phenopackets", None, None)  # no record or field: there are none
    assert "no phenopackets" in str(error)


def test_split_naming_an_unknown_patient(site):
    path = site / "split.csv"
    path.write_text("patient_id,split\np1,train\np2,test\np9,val\n")

    assert_names(error_of(site), path, "row 4 (p9)", "patient_id")


def test_identical_phenopackets_under_two_ids_are_reported(site):
    p1 = json.loads((site / "phenopackets" / "p1.json").read_text())
    (site / "phenopackets" / "p3.json").write_text(json.dumps({**p1, "id": "p3"}))

    _, report = load(site)

    assert report["duplicates"]["phenopackets_same_content"] == 1


# --- variants -------------------------------------------------------------------------------------

def test_vcf_with_a_broken_header(site):
    path = site / "vcf" / "p1.vcf"
    path.write_text("##fileformat=VCFv4.2\n##INFO=<ID=GENE,Number=1\n#CHROM\tPOS\n")

    assert_names(error_of(site), path, "p1", "GENE")


def test_vcf_on_the_wrong_build(site):
    path = site / "vcf" / "p1.vcf"
    path.write_text(vcf(extra="##reference=GRCh37\n"))

    error = error_of(site)
    _, report = load(site, variants=VariantReader(allow_other_build=True))

    assert_names(error, path, "p1", "##reference")
    assert report["repairs"]["variants"]["other_build_allowed"] == {"count": 1, "details": {"GRCh37 (expected GRCh38)": 1}}


def test_multiallelic_record_is_one_row_with_the_first_alt_counted(site):
    (site / "vcf" / "p1.vcf").write_text(vcf([("G,T", "0.001,0.2", "1/2")]))

    splits, report = load(site)

    table = next(i for s in splits.values() for i in s.items if i["patient_id"] == "p1")["inputs"]["variants"]
    assert table.shape[0] == 1
    assert report["repairs"]["variants"]["multiallelic_first_alt"]["count"] == 1


def test_vcf_with_two_samples(site):
    path = site / "vcf" / "p1.vcf"
    path.write_text(vcf([("G", "0.001", "0/1\t0/0")], samples="\tS2"))

    assert_names(error_of(site), path, "p1", "samples")


def test_non_numeric_allele_frequency(site):
    path = site / "vcf" / "p1.vcf"
    path.write_text(vcf([("G", "0.001", "0/1"), ("G", "common", "0/1")]))

    error = error_of(site)

    assert_names(error, path, "p1 chr1:101", "AF")


def test_allele_frequency_outside_unit_interval(site):
    path = site / "vcf" / "p1.vcf"
    path.write_text(vcf([("G", "1.5", "0/1")]))

    assert_names(error_of(site), path, "p1 chr1:100", "AF")


def test_phenopacket_vcf_record_on_the_wrong_build(site):
    path = site / "phenopackets" / "p2.json"
    (site / "vcf" / "p2.vcf").unlink()
    descriptor = {"vcfRecord": {"genomeAssembly": "hg19", "chrom": "chr1", "pos": 5, "ref": "A", "alt": "G"},
                  "geneContext": {"valueId": "HGNC:10585", "symbol": "SCN1A"}, "allelicState": {"id": "GENO:0000136"}}
    edit_packet(path, lambda d: d["interpretations"][0]["diagnosis"].update(
        genomicInterpretations=[{"subjectOrBiosampleId": "p2", "interpretationStatus": "CAUSATIVE",
                                 "variantInterpretation": {"variationDescriptor": {"id": "v1", **descriptor}}}]))

    error = error_of(site, variants=VariantReader(from_phenopacket=True))
    _, report = load(site, variants=VariantReader(from_phenopacket=True, allow_other_build=True))

    assert_names(error, path, "p2", "genomicInterpretations[0].variantInterpretation.variationDescriptor.vcfRecord.genomeAssembly")
    assert report["repairs"]["variants"]["variant_rows_from_phenopacket"]["count"] == 1
    assert report["repairs"]["variants"]["other_build_allowed"]["count"] == 1
    assert report["fields"]["variants"]["CADD"] == 0.5  # the phenopacket row has no scores: flagged missing


# --- imaging --------------------------------------------------------------------------------------

def test_image_containing_nan(site):
    (site / "images" / "p1.png").unlink()
    path = site / "images" / "p1.nii"
    pixels = np.zeros((8, 8), dtype=np.float32)
    pixels[3, 3] = np.nan
    nib.save(nib.Nifti1Image(pixels, np.eye(4)), str(path))

    assert_names(error_of(site), path, "p1", "pixels")


def test_rgb_image_is_made_grey_and_counted(site):
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(site / "images" / "p1.png")

    _, report = load(site)

    assert report["repairs"]["imaging"]["rgb_to_grey"]["count"] == 1


# --- labs -----------------------------------------------------------------------------------------

def test_lab_value_in_an_unknown_unit(site):
    path = site / "labs.csv"
    path.write_text("patient_id,analyte,value,unit\np1,glucose,5.0,mmol/L\np2,glucose,90,furlongs/fortnight/L\n")

    assert_names(error_of(site), path, "row 3 (p2)", "unit")


def test_labs_csv_without_a_required_column(site):
    path = site / "labs.csv"
    path.write_text("patient_id,analyte,value\np1,glucose,5.0\n")

    assert_names(error_of(site), path, None, "unit")  # a missing column has no record


def test_non_numeric_lab_value(site):
    path = site / "labs.csv"
    path.write_text("patient_id,analyte,value,unit\np1,glucose,high,mmol/L\n")

    assert_names(error_of(site), path, "row 2 (p1)", "value")


def test_duplicate_lab_rows_are_averaged_and_counted(site):
    (site / "labs.csv").write_text("patient_id,analyte,value,unit\np1,glucose,5.0,mmol/L\np1,glucose,6.0,mmol/L\np1,sodium_x,1,mmol/L\n")

    _, report = load(site)

    assert report["repairs"]["labs"]["duplicate_rows_averaged"]["count"] == 1
    assert report["repairs"]["labs"]["unknown_analyte_rows"] == {"count": 1, "details": {"sodium_x": 1}}
    assert report["missing"]["labs"] == 0.5  # p2 has no labs now


def test_phenopacket_measurement_in_an_unknown_unit(site):
    path = site / "phenopackets" / "p1.json"
    quantity = {"unit": {"id": "UCUM:furlong", "label": "furlong"}, "value": 5.0}
    edit_packet(path, lambda d: d.update(measurements=[{"assay": {"id": "LOINC:2345-7", "label": "Glucose"}, "value": {"quantity": quantity}}]))
    reader = LabReader(source="phenopacket", assays={"LOINC:2345-7": "glucose"})

    assert_names(error_of(site, labs=reader), path, "p1 measurements[0]", "unit")


def test_phenopacket_measurements_are_read_and_converted(site):
    quantity = {"unit": {"id": "UCUM:mg/dL", "label": "mg/dL"}, "value": 90.0}
    edit_packet(site / "phenopackets" / "p1.json", lambda d: d.update(
        measurements=[{"assay": {"id": "LOINC:2345-7", "label": "Glucose"}, "value": {"quantity": quantity}}]))
    reader = LabReader(source="phenopacket", assays={"LOINC:2345-7": "glucose"})

    splits, report = load(site, labs=reader)

    assert report["missing"]["labs"] == 0.5
    assert report["repairs"]["labs"]["unit_conversions"]["details"] == {"glucose: mg/dL -> mmol/l": 1}
    assert report["fields"]["labs"]["glucose"] == 0.0


def test_a_data_error_survives_a_process_boundary_with_its_place_and_reason():
    import pickle

    error = DataError("site/labs.csv", "unit 'mg' is not a concentration", record="P7", field="value")

    copy = pickle.loads(pickle.dumps(error))

    assert str(copy) == str(error) == "site/labs.csv: record P7: field value: unit 'mg' is not a concentration"
    assert (copy.path, copy.record, copy.field, copy.reason) == (error.path, "P7", "value", error.reason)
