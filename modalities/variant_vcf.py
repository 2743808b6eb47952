"""Variants to score from a VCF: numeric INFO fields (scores, allele frequency) per ALT allele, read with scikit-allel.

A lab's VUS list usually arrives as an annotated sites VCF (VEP or bcftools
with dbNSFP), one record per site. Every problem that would make a score wrong
stops the read with a DataError naming the file, the record and the field:

- a configured INFO field missing from the header (map it in `info_fields`, or
  set it to null to score that feature as missing for every variant);
- another genome build: a `##reference`/`##assembly` line naming another build,
  or a `##contig` whose length differs from the configured build's. A header
  with neither cannot be checked; it is read and counted (`build_unchecked`);
- a POS beyond the configured length of its contig;
- a value that is not a number ('.' is a missing value, not an error);
- a REF that is not bases, or an ALT equal to REF (modalities.variants.check_alleles);
- a path that is not a regular file (a named pipe would block the read);
- a multi-allelic record, when `multiallelic: error`. With `split` (default)
  each ALT allele is scored on its own: a Number=A field gives each allele its
  own value (Number=R: skipping the REF value), a single value is shared (a
  per-site score such as conservation), any other count is an error; with
  `skip` the record is left out and counted. Spanning deletions (`*`) and
  records without an ALT are left out and counted.
"""
from __future__ import annotations

import gzip
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import allel
import numpy as np

from modalities.base import DataError, check_option, parse_number, regular_file
from modalities.quality import ReadStats
from modalities.variant_features import FeatureSpec
from modalities.variants import check_alleles, normalise_build

MULTIALLELIC = ("split", "skip", "error")
MISSING = {".", ""}
_CONTIG = re.compile(r"^##contig=<(.*)>\s*$")


@dataclass
class VcfVariants:
    """One row per scored ALT allele: where it came from (record, allele) and its raw feature values [N, F]."""

    path: Path
    chrom: list[str] = field(default_factory=list)
    pos: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    ref: list[str] = field(default_factory=list)
    alt: list[str] = field(default_factory=list)
    record_index: list[int] = field(default_factory=list)
    allele_index: list[int] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    raw: np.ndarray | None = None
    n_records: int = 0
    counts: ReadStats = field(default_factory=ReadStats)


def contig_name(name: str) -> str:
    """'chr1' and '1' are the same contig; so are 'chrM', 'M' and 'MT'."""
    name = re.sub(r"(?i)^chr", "", str(name).strip())
    return "MT" if name.upper() in ("M", "MT") else name


def read_scoring_vcf(
    path: str | Path, specs: Sequence[FeatureSpec], info_fields: Mapping[str, str | None], build: Mapping, multiallelic: str = "split"
) -> VcfVariants:
    """Read the features the model needs (`info_fields`: feature name -> INFO ID, or None for always missing)."""
    path = Path(path)
    check_option("multiallelic", multiallelic, MULTIALLELIC)
    headers = _headers(path)
    fields = _fields(path, specs, info_fields, headers)
    out = VcfVariants(path)
    contigs = _check_build(path, headers.headers, build, out.counts)
    calls = _read(path, list(fields.values()))
    out.n_records = len(calls["variants/POS"])
    rows = []
    for v in range(out.n_records):
        alts = [a for a in calls["variants/ALT"][v] if a]
        chrom, pos = str(calls["variants/CHROM"][v]), int(calls["variants/POS"][v])
        record = f"record {v + 1} ({chrom}:{pos} {calls['variants/REF'][v]}>{','.join(alts) or '.'})"
        length = contigs.get(contig_name(chrom))
        if length is not None and pos > length:
            raise DataError(path, f"POS {pos} is beyond {build['name']}'s {chrom} (length {length}): another build?", record=record, field="POS")
        check_alleles(path, record, str(calls["variants/REF"][v]), alts)
        if not _keep_record(path, record, alts, multiallelic, out.counts):
            continue
        for a, alt in enumerate(alts):
            if alt == "*":
                out.counts.add("spanning_deletion_skipped")
                continue
            rows.append([_value(path, record, calls, v, a, len(alts), name, headers.infos[name]["Number"]) if name else np.nan
                         for name in (fields.get(s.name) for s in specs)])
            _append(out, calls, v, a, alt, record)
    if not rows:
        raise DataError(path, "no variant to score (no records, or every record was left out)", field="ALT")
    out.raw = np.asarray(rows, dtype=np.float64)
    return out


def _headers(path: Path):
    regular_file(path)  # a named pipe would block the read
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:  # our own handle: allel leaves its own open on errors
            return allel.read_vcf_headers(stream)
    except Exception as err:  # allel raises RuntimeError, OSError, UnicodeDecodeError, ...
        raise DataError(path, f"cannot parse VCF header: {err}", field="header") from err


def _fields(path: Path, specs: Sequence[FeatureSpec], info_fields: Mapping[str, str | None], headers) -> dict[str, str]:
    """feature name -> INFO ID for the features mapped to a field; every feature must be mentioned, every field declared."""
    unmapped = [s.name for s in specs if s.name not in info_fields]
    if unmapped:
        raise ValueError(f"info_fields does not say where the model's features {unmapped} are: name an INFO ID, or null for always missing")
    fields = {s.name: str(info_fields[s.name]) for s in specs if info_fields[s.name]}
    for name, info in fields.items():
        if info not in headers.infos:
            raise DataError(path, f"no ##INFO=<ID={info}> in the header (feature {name}; set info_fields.{name}=null to score it as missing)", field=info)
    return fields


def _check_build(path: Path, lines: Sequence[str], build: Mapping, counts: ReadStats) -> dict[str, int]:
    """The configured contig lengths; raises on a header that names or measures another build."""
    expected = {contig_name(k): int(v) for k, v in (build.get("contigs") or {}).items()}
    wanted = normalise_build(str(build["name"]))
    checked = False
    for line in lines:
        for key in ("##reference=", "##assembly="):
            claimed = normalise_build(line[len(key):]) if line.startswith(key) else None
            if claimed and wanted and claimed != wanted:
                raise DataError(path, f"header names build {claimed} ({line.strip()}), expected {build['name']}", field=key.strip("#="))
            checked |= bool(claimed)
        match = _CONTIG.match(line)
        attributes = dict(re.findall(r"(\w+)=([^,>]+)", match.group(1))) if match else {}
        name = contig_name(attributes.get("ID", ""))
        if "length" in attributes and name in expected:
            if int(attributes["length"]) != expected[name]:
                raise DataError(
                    path, f"contig {attributes['ID']} has length {attributes['length']}, but {build['name']}'s is {expected[name]}: another build?", field="contig"
                )
            checked = True
    if not checked:
        counts.add("build_unchecked", "no ##reference or ##contig length in the header")
    return expected


def _read(path: Path, infos: list[str]) -> dict:
    """Records with the INFO fields as text (we parse numbers ourselves, to name the bad value)."""
    try:
        first = allel.read_vcf(str(path), fields=["variants/numalt"])
        if first is None:
            raise DataError(path, "no records", field="records")
        width = int(max(1, first["variants/numalt"].max())) + 1  # + 1: a Number=R field also holds the REF value
        calls = allel.read_vcf(
            str(path),
            fields=["variants/CHROM", "variants/POS", "variants/ID", "variants/REF", "variants/ALT"] + [f"variants/{i}" for i in infos],
            numbers={"ALT": width, **{i: width for i in infos}},
            types={i: "object" for i in infos},
        )
    except DataError:
        raise
    except Exception as err:
        raise DataError(path, f"cannot parse VCF: {err}") from err
    return calls


def _keep_record(path: Path, record: str, alts: list[str], policy: str, counts: ReadStats) -> bool:
    if not alts or alts == ["."]:
        counts.add("no_alt_allele_skipped")
        return False
    if len(alts) > 1:
        if policy == "error":
            raise DataError(path, f"multi-allelic record ({len(alts)} ALT alleles); set multiallelic=split or skip", record=record, field="ALT")
        counts.add(f"multiallelic_{policy}")
        return policy == "split"
    return True


def _value(path: Path, record: str, calls: dict, v: int, a: int, n_alts: int, info: str, number: str) -> float:
    """The value of INFO field `info` for ALT allele `a` of record `v`, by its declared Number."""
    values = [str(x) for x in calls[f"variants/{info}"][v] if str(x) != ""]
    if not values:
        return np.nan
    if number == "R":
        values = values[1:] if len(values) == n_alts + 1 else values
    if len(values) == n_alts:
        text = values[a]
    elif len(values) == 1 and number != "A":
        text = values[0]  # one value for the site, shared by its alleles
    else:
        raise DataError(path, f"{len(values)} values for {n_alts} ALT alleles (Number={number})", record=record, field=info)
    return parse_number(text, MISSING, path, record, info)


def _append(out: VcfVariants, calls: dict, v: int, a: int, alt: str, record: str) -> None:
    out.chrom.append(str(calls["variants/CHROM"][v]))
    out.pos.append(int(calls["variants/POS"][v]))
    out.ids.append(str(calls["variants/ID"][v]))
    out.ref.append(str(calls["variants/REF"][v]))
    out.alt.append(alt)
    out.record_index.append(v)
    out.allele_index.append(a)
    out.records.append(record)
