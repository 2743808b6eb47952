"""One VCF 4.2 file per patient, in the layout docs/site-folder.md describes.

The header declares every INFO field the readers use, so scikit-allel parses them
with their types (missing values as '.'); records are sorted by chromosome, then
position, as indexed VCFs are.
"""
from __future__ import annotations

from pathlib import Path

from modalities.synthetic.variants import GRCH38_LENGTHS, Variant

HEADER_INFO = (
    '##INFO=<ID=GENE,Number=1,Type=String,Description="HGNC gene symbol">',
    '##INFO=<ID=CSQ,Number=1,Type=String,Description="Most severe Sequence Ontology consequence">',
    '##INFO=<ID=IMPACT,Number=1,Type=String,Description="Consequence impact: HIGH, MODERATE, LOW or MODIFIER">',
    '##INFO=<ID=AF,Number=A,Type=Float,Description="Population allele frequency; . when absent from the database">',
    '##INFO=<ID=CADD,Number=1,Type=Float,Description="CADD PHRED score">',
    '##INFO=<ID=REVEL,Number=1,Type=Float,Description="REVEL score">',
)
CHROM_ORDER = {chrom: i for i, chrom in enumerate(GRCH38_LENGTHS)}


def write_vcf(path: Path, sample: str, variants: list[Variant]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    records = sorted(variants, key=lambda v: (CHROM_ORDER[v.chrom], v.pos))
    lines = [*_header(sample), *(_record(v) for v in records)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _header(sample: str) -> list[str]:
    contigs = [f"##contig=<ID={chrom},length={length},assembly=GRCh38>" for chrom, length in GRCH38_LENGTHS.items()]
    return [
        "##fileformat=VCFv4.2",
        "##source=rarefed-synthetic-consortium",
        "##reference=GRCh38",
        *HEADER_INFO,
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        *contigs,
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", sample]),
    ]


def _record(v: Variant) -> str:
    info = f"GENE={v.gene};CSQ={v.csq};IMPACT={v.impact};AF={_number(v.af)};CADD={_number(v.cadd)};REVEL={_number(v.revel)}"
    return "\t".join([v.chrom, str(v.pos), v.id, v.ref, v.alt, ".", "PASS", info, "GT", v.genotype])


def _number(value: float | None) -> str:
    return "." if value is None else f"{value:.4g}"
