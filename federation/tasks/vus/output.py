"""What the VUS scorer writes: a TSV (one row per scored allele) and the input VCF with the scores in INFO.

The annotated VCF keeps every input line as it was and adds Number=A INFO
fields, so a multi-allelic record gets one value per ALT allele ('.' for an
allele that was not scored). A table input gets a new sites-only VCF.
Both files are written atomically: a failed run leaves neither half-written.
"""
from __future__ import annotations

import gzip
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from federation.outputs import write_atomic
from modalities.base import DataError

PREFIX = "RAREFED_"
INFO_FIELDS = {  # output column -> (INFO ID, Type, Description)
    "probability": ("RAREFED_P", "Float", "Calibrated posterior probability of pathogenicity at the configured prior"),
    "low": ("RAREFED_P_LOW", "Float", "Lower end of the posterior's bootstrap interval"),
    "high": ("RAREFED_P_HIGH", "Float", "Upper end of the posterior's bootstrap interval"),
    "likelihood_ratio": ("RAREFED_LR", "Float", "Likelihood ratio P(score|pathogenic)/P(score|benign)"),
    "evidence": ("RAREFED_EVIDENCE", "String", "PP3/BP4 strength from posterior thresholds (Pejaver et al. 2022), or uncertain"),
}


def write_tsv(path: Path, frame: pd.DataFrame) -> None:
    write_atomic(path, lambda p: frame.to_csv(p, sep="\t", index=False, float_format="%.6g"))


def info_header(prior: float) -> list[str]:
    lines = [f'##INFO=<ID={info},Number=A,Type={kind},Description="{text}">' for info, kind, text in INFO_FIELDS.values()]
    return lines + [f"##rarefed_prior={prior}"]


def annotate_vcf(source: Path, out: Path, frame: pd.DataFrame, prior: float) -> None:
    """Copy `source` with the scores of `frame` (columns record_index, allele_index, ...) added to each record's INFO."""
    by_record: dict[int, dict[int, Mapping]] = {}
    for row in frame.to_dict("records"):
        by_record.setdefault(int(row["record_index"]), {})[int(row["allele_index"])] = row
    opener = gzip.open if source.name.endswith(".gz") else open

    def write(tmp: Path) -> None:
        record = 0
        with opener(source, "rt", encoding="utf-8") as lines, tmp.open("w", encoding="utf-8") as sink:
            for line in lines:
                if line.startswith("#CHROM"):
                    sink.write("\n".join(info_header(prior)) + "\n")
                if line.startswith("#") or not line.strip():
                    sink.write(line)
                    continue
                sink.write(_annotated(line.rstrip("\n"), by_record.get(record, {})) + "\n")
                record += 1
        if by_record and max(by_record) >= record:
            raise DataError(source, f"{record} records on re-reading, but scikit-allel read more: cannot annotate", field="records")

    write_atomic(out, write)


def new_vcf(out: Path, frame: pd.DataFrame, prior: float) -> None:
    """A sites-only VCF for variants that came from a table (columns chrom, pos, ref, alt)."""
    header = ["##fileformat=VCFv4.2", *info_header(prior), "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    lines = [
        "\t".join([str(r["chrom"]), str(r["pos"]), str(r.get("id") or "."), str(r["ref"]), str(r["alt"]), ".", ".", _info({0: r}, 1)])
        for r in frame.to_dict("records")
    ]
    write_atomic(out, lambda p: p.write_text("\n".join(header + lines) + "\n"))


def _annotated(line: str, alleles: Mapping[int, Mapping]) -> str:
    columns = line.split("\t")
    n_alts = len(columns[4].split(","))
    kept = [item for item in columns[7].split(";") if item not in (".", "") and not item.startswith(PREFIX)]
    columns[7] = ";".join(kept + [_info(alleles, n_alts)]) if alleles else (";".join(kept) or ".")
    return "\t".join(columns)


def _info(alleles: Mapping[int, Mapping], n_alts: int) -> str:
    """INFO items for one record: a value per ALT allele, '.' where that allele was not scored."""
    parts = []
    for column, (info, kind, _) in INFO_FIELDS.items():
        values = [_text(alleles[a][column], kind) if a in alleles else "." for a in range(n_alts)]
        parts.append(f"{info}={','.join(values)}")
    return ";".join(parts)


def _text(value, kind: str) -> str:
    return f"{float(value):.6g}" if kind == "Float" else str(value)


def ordered_columns(frame: pd.DataFrame, first: Sequence[str]) -> pd.DataFrame:
    return frame[[c for c in first if c in frame.columns] + [c for c in frame.columns if c not in first]]
