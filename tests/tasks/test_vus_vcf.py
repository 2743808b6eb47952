"""Reading VCFs of variants to score: per-allele values, and every bad-input path (tiny VCFs written per test)."""
from pathlib import Path

import numpy as np
import pytest

from modalities.base import DataError
from modalities.variant_features import FeatureSpec, check_and_transform
from modalities.variant_vcf import contig_name, read_scoring_vcf

SPECS = [
    FeatureSpec("MAF", "MAF", transform="neglog10", pathogenic="low", in_silico=False, range=(0.0, 1.0)),
    FeatureSpec("REVEL", "REVEL_score"),
    FeatureSpec("CADD", "CADD_phred"),
]
FIELDS = {"MAF": "AF", "REVEL": "REVEL", "CADD": "CADD"}
BUILD = {"name": "GRCh37", "contigs": {"1": 249250621, "2": 243199373}}
INFO_HEADER = (
    '##INFO=<ID=AF,Number=A,Type=Float,Description="allele frequency">\n'
    '##INFO=<ID=REVEL,Number=A,Type=Float,Description="REVEL">\n'
    '##INFO=<ID=CADD,Number=1,Type=Float,Description="CADD phred">\n'
)
COLUMNS = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


def vcf(tmp_path: Path, records: list[str], header: str = "##contig=<ID=1,length=249250621>\n" + INFO_HEADER, name: str = "in.vcf") -> Path:
    path = tmp_path / name
    path.write_text("##fileformat=VCFv4.2\n" + header + COLUMNS + "".join(r + "\n" for r in records))
    return path


def read(path: Path, **kwargs):
    return read_scoring_vcf(path, SPECS, kwargs.pop("fields", FIELDS), kwargs.pop("build", BUILD), **kwargs)


def test_values_are_read_per_allele_and_missing_stays_missing(tmp_path):
    path = vcf(tmp_path, ["1\t100\trs1\tA\tG\t.\tPASS\tAF=0.001;REVEL=0.7;CADD=25", "1\t200\t.\tC\tT\t.\t.\tAF=.;REVEL=0.2"])

    variants = read(path)

    assert variants.alt == ["G", "T"]
    assert variants.raw[0].tolist() == [0.001, 0.7, 25.0]
    assert variants.raw[1, 0] != variants.raw[1, 0] and variants.raw[1, 1] == 0.2  # AF '.' and CADD absent: NaN
    assert np.isnan(variants.raw[1, 2])


def test_a_multiallelic_record_is_split_with_number_a_values_per_allele_and_site_values_shared(tmp_path):
    path = vcf(tmp_path, ["1\t100\t.\tA\tG,T\t.\t.\tAF=0.01,0.002;REVEL=0.1,0.9;CADD=20"])

    variants = read(path)

    assert variants.alt == ["G", "T"] and variants.allele_index == [0, 1] and variants.record_index == [0, 0]
    assert variants.raw[:, 1].tolist() == [0.1, 0.9]
    assert variants.raw[:, 2].tolist() == [20.0, 20.0]
    assert variants.counts["multiallelic_split"] == 1


def test_multiallelic_skip_counts_the_record_and_error_names_it(tmp_path):
    path = vcf(tmp_path, ["1\t100\t.\tA\tG\t.\t.\tREVEL=0.5", "1\t150\t.\tA\tG,T\t.\t.\tREVEL=0.1,0.9"])

    skipped = read(path, multiallelic="skip")
    with pytest.raises(DataError) as err:
        read(path, multiallelic="error")

    assert skipped.pos == [100] and skipped.counts["multiallelic_skip"] == 1
    assert err.value.record.startswith("record 2 (1:150") and err.value.field == "ALT" and str(path) in str(err.value)


def test_a_number_a_field_with_too_few_values_names_record_and_field(tmp_path):
    path = vcf(tmp_path, ["1\t100\t.\tA\tG,T\t.\t.\tREVEL=0.1"])

    with pytest.raises(DataError) as err:
        read(path)

    assert err.value.field == "REVEL" and "record 1" in err.value.record and "1 values for 2 ALT" in err.value.reason


def test_a_configured_info_field_missing_from_the_header_is_an_error_naming_it(tmp_path):
    path = vcf(tmp_path, ["1\t100\t.\tA\tG\t.\t.\tAF=0.1"], header=INFO_HEADER.replace("CADD", "CADD_raw"))

    with pytest.raises(DataError) as err:
        read(path)

    assert err.value.field == "CADD" and "no ##INFO=<ID=CADD>" in err.value.reason and err.value.path == str(path)


def test_a_field_mapped_to_null_is_scored_as_missing(tmp_path):
    path = vcf(tmp_path, ["1\t100\t.\tA\tG\t.\t.\tAF=0.1;REVEL=0.3"], header=INFO_HEADER.replace("CADD", "CADD_raw"))

    variants = read(path, fields={**FIELDS, "CADD": None})

    assert np.isnan(variants.raw[0, 2]) and variants.raw[0, 1] == 0.3


def test_every_model_feature_must_be_mapped(tmp_path):
    path = vcf(tmp_path, ["1\t100\t.\tA\tG\t.\t.\tAF=0.1"])

    with pytest.raises(ValueError, match="CADD"):
        read(path, fields={"MAF": "AF", "REVEL": "REVEL"})


@pytest.mark.parametrize("contig", ["1", "chr1"])
def test_a_contig_of_another_build_is_an_error(tmp_path, contig):
    grch38_chr1 = f"##contig=<ID={contig},length=248956422>\n"
    path = vcf(tmp_path, [f"{contig}\t100\t.\tA\tG\t.\t.\tREVEL=0.5"], header=grch38_chr1 + INFO_HEADER)

    with pytest.raises(DataError) as err:
        read(path)

    assert err.value.field == "contig" and "248956422" in err.value.reason and "249250621" in err.value.reason


def test_a_reference_line_naming_another_build_is_an_error(tmp_path):
    path = vcf(tmp_path, ["1\t100\t.\tA\tG\t.\t.\tREVEL=0.5"], header="##reference=GRCh38\n" + INFO_HEADER)

    with pytest.raises(DataError, match="GRCh38"):
        read(path)


def test_a_position_beyond_the_contig_is_an_error_and_an_unchecked_header_is_counted(tmp_path):
    fine = read(vcf(tmp_path, ["1\t100\t.\tA\tG\t.\t.\tREVEL=0.5"], header=INFO_HEADER, name="fine.vcf"))
    path = vcf(tmp_path, ["2\t243199374\t.\tA\tG\t.\t.\tREVEL=0.5"], header=INFO_HEADER)

    with pytest.raises(DataError) as err:
        read(path)

    assert fine.counts["build_unchecked"] == 1
    assert err.value.field == "POS" and "record 1 (2:243199374" in err.value.record


def test_a_value_that_is_not_a_number_names_record_and_field(tmp_path):
    path = vcf(tmp_path, ["1\t100\t.\tA\tG\t.\t.\tREVEL=0.5", "1\t200\t.\tC\tT\t.\t.\tREVEL=0.4;CADD=high"])

    with pytest.raises(DataError) as err:
        read(path)

    assert err.value.field == "CADD" and err.value.record.startswith("record 2 (1:200") and err.value.reason == "the value is not a number"


def test_a_frequency_out_of_range_is_caught_before_scoring(tmp_path):
    variants = read(vcf(tmp_path, ["1\t100\t.\tA\tG\t.\t.\tAF=12.5;REVEL=0.5"]))  # a percentage, not a frequency

    with pytest.raises(DataError) as err:
        check_and_transform(variants.raw, SPECS, variants.path, variants.records)

    assert err.value.field == "MAF" and "outside [0, 1]" in err.value.reason


def test_spanning_deletions_are_left_out_and_counted(tmp_path):
    variants = read(vcf(tmp_path, ["1\t100\t.\tA\tG,*\t.\t.\tAF=0.1,0.2;REVEL=0.5,."]))

    assert variants.alt == ["G"] and variants.counts["spanning_deletion_skipped"] == 1


def test_an_unreadable_file_is_a_data_error(tmp_path):
    path = tmp_path / "broken.vcf"
    path.write_text("this is not a vcf\n")

    with pytest.raises(DataError):
        read(path)


def test_contig_names_compare_without_chr_prefix():
    assert contig_name("chr1") == contig_name("1") == "1"
    assert contig_name("chrM") == contig_name("MT") == "MT"
