import gzip
import math

import pytest
import torch

from modalities.base import DataError
from modalities.phenopacket_io import read_cohort
from modalities.variants import (
    CONSEQUENCES,
    N_CONSEQUENCES,
    N_IMPACTS,
    VARIANT_COLUMNS,
    VariantReader,
    consequence_code,
    n_genes,
    variant_columns,
)

HEADER = """##fileformat=VCFv4.2
{extra}##INFO=<ID=GENE,Number=1,Type=String,Description="Gene symbol">
##INFO=<ID=CSQ,Number=.,Type=String,Description="SO consequence">
##INFO=<ID=IMPACT,Number=1,Type=String,Description="Impact">
##INFO=<ID=AF,Number=A,Type=Float,Description="Population allele frequency">
##INFO=<ID=CADD,Number=1,Type=Float,Description="CADD phred">
##INFO=<ID=REVEL,Number=1,Type=Float,Description="REVEL">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1
"""


def vcf_text(rows, extra=""):
    return HEADER.format(extra=extra) + "".join(
        f"chr1\t{100 + i}\t.\tA\tG\t.\tPASS\t{info}\tGT\t{gt}\n" for i, (info, gt) in enumerate(rows)
    )


def col(name):
    return VARIANT_COLUMNS.index(name)


@pytest.fixture
def site(tmp_path, write_phenopacket):
    write_phenopacket(tmp_path / "phenopackets", "p1")
    return tmp_path


def read(site, text, name="p1.vcf", **kwargs):
    (site / "vcf").mkdir(exist_ok=True)
    (site / "vcf" / name).write_text(text)
    reader = VariantReader(**kwargs)
    return reader, reader.read_site(site, read_cohort(site / "phenopackets"))


def test_columns_layout():
    assert VARIANT_COLUMNS[:7] == ("valid", "gene", "consequence", "impact", "zygosity", "af_neglog10", "af_missing")
    assert variant_columns(["X"])[7:] == ("X", "X_missing")
    assert N_CONSEQUENCES == len(CONSEQUENCES) + 1 and N_IMPACTS == 5


def test_variant_features(site, hpo):
    rows = [
        ("GENE=FBN1;CSQ=splice_region_variant&missense_variant;IMPACT=MODERATE;AF=0.001;CADD=25.5;REVEL=0.7", "0/1"),
        ("GENE=NOT_A_GENE;CSQ=stop_gained;IMPACT=HIGH;AF=0;CADD=40", "1/1"),
        ("GENE=FBN1;CSQ=synonymous_variant;IMPACT=LOW;AF=0.3;CADD=1;REVEL=0.1", "0/0"),
        ("GENE=FBN1;CSQ=intron_variant;IMPACT=MODIFIER;AF=0.2", "./."),
    ]
    reader, out = read(site, vcf_text(rows))

    table = out["p1"]
    assert table.dtype == torch.float32 and table.shape == (2, len(VARIANT_COLUMNS))
    # rarest first: AF=0 (hom-alt stop_gained) before AF=0.001
    stop, missense = table[0], table[1]
    assert stop[col("zygosity")] == 2 and missense[col("zygosity")] == 1
    assert stop[col("valid")] == 1 and missense[col("valid")] == 1
    assert missense[col("gene")] == hpo.gene_symbols.index("FBN1") + 1
    assert stop[col("gene")] == 0
    assert missense[col("consequence")] == CONSEQUENCES.index("missense_variant") + 1
    assert stop[col("impact")] == 4 and missense[col("impact")] == 3
    assert missense[col("af_neglog10")] == pytest.approx(-math.log10(0.001) / 6)
    assert stop[col("af_neglog10")] == pytest.approx(1.0) and stop[col("af_missing")] == 0
    assert missense[col("CADD")] == pytest.approx(25.5) and missense[col("REVEL")] == pytest.approx(0.7)
    assert stop[col("REVEL")] == 0 and stop[col("REVEL_missing")] == 1 and stop[col("CADD_missing")] == 0
    assert reader.stats["uncalled_or_ref_dropped"] == 2
    assert n_genes() == len(hpo.gene_symbols) + 1


def test_missing_af_and_max_variants_keep_rarest(site):
    afs = ["0.5", "0.01", ".", "0.2", "0.0001", "0.01"]
    rows = [(f"GENE=FBN1;CSQ=missense_variant;IMPACT=LOW;AF={af};CADD={i}", "0/1") for i, af in enumerate(afs)]
    _, out = read(site, vcf_text(rows), max_variants=4)

    table = out["p1"]
    # missing AF counts as rarest; ties keep file order (stable)
    assert table[:, col("CADD")].tolist() == [2, 4, 1, 5]
    assert table[0, col("af_missing")] == 1 and table[0, col("af_neglog10")] == 0
    assert table[1:, col("af_missing")].tolist() == [0, 0, 0]


def test_gzipped_vcf_and_collate(site):
    (site / "vcf").mkdir()
    with gzip.open(site / "vcf" / "p1.vcf.gz", "wt") as f:
        f.write(vcf_text([("GENE=FBN1;CSQ=missense_variant;IMPACT=LOW;AF=0.1", "0|1")] * 3))
    reader = VariantReader()

    out = reader.read_site(site, read_cohort(site / "phenopackets"))
    batch = reader.collate([out["p1"], out["p1"][:1]])

    assert batch.shape == (2, 3, len(VARIANT_COLUMNS))
    assert batch[1, 1:].abs().sum() == 0 and batch[1, 0, col("valid")] == 1


def test_files_without_phenopacket_are_ignored(site):
    reader, out = read(site, vcf_text([("AF=0.1", "0/1")]), name="stranger.vcf")

    assert out == {} and reader.stats["files_without_phenopacket"] == 1


def test_unparseable_vcf(site):
    with pytest.raises(DataError) as err:
        read(site, "this is not a VCF\njust\ttext\n")

    assert err.value.path.endswith("p1.vcf") and err.value.field == "header"


def test_unparseable_value(site):
    text = vcf_text([("AF=0.1", "0/1")]).replace("chr1\t100", "chr1\tabc")
    with pytest.raises(DataError) as err:
        read(site, text)

    assert err.value.path.endswith("p1.vcf") and err.value.field == "POS"


def test_missing_info_field(site):
    text = vcf_text([("AF=0.1", "0/1")]).replace('##INFO=<ID=REVEL,Number=1,Type=Float,Description="REVEL">\n', "")
    with pytest.raises(DataError) as err:
        read(site, text)

    assert err.value.path.endswith("p1.vcf") and err.value.field == "REVEL"


def test_hg19_header_when_grch38_expected(site):
    with pytest.raises(DataError) as err:
        read(site, vcf_text([("AF=0.1", "0/1")], extra="##reference=file:///refs/hg19.fa\n"))

    assert err.value.path.endswith("p1.vcf") and err.value.field == "##reference"
    assert "GRCh37" in str(err.value)


def test_build_from_phenopacket_file_attributes(tmp_path, write_phenopacket):
    write_phenopacket(tmp_path / "phenopackets", "p1", files=[("file:///x/p1.vcf", {"genomeAssembly": "GRCh37"})])

    with pytest.raises(DataError) as err:
        read(tmp_path, vcf_text([("AF=0.1", "0/1")], extra="##reference=GRCh38\n"))

    assert err.value.field == "files[0].fileAttributes.genomeAssembly"
    _, out = read(tmp_path, vcf_text([("AF=0.1", "0/1")]), genome_build="GRCh37")
    assert out["p1"].shape[0] == 1


def test_consequence_code_takes_most_severe():
    assert consequence_code("intron_variant&stop_gained&made_up") == CONSEQUENCES.index("stop_gained") + 1
    assert consequence_code("made_up") == 0 and consequence_code("") == 0
