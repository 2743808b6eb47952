"""Annotated variants of each patient (one VCF per patient) as a [V, F] feature table.

Each called variant becomes a row of `VARIANT_COLUMNS`: categorical columns
(gene, consequence, impact) hold `1 + index` into fixed vocabularies (0 = unknown)
so the encoder can embed them; numeric columns come with missing indicators, since
a missing allele frequency or score is common and is not the same as zero.
VCFs are read with scikit-allel; the annotation is expected in INFO fields (as
written by VEP/SnpEff-style pipelines flattened to one value per field).

A patient without a VCF may still have variants in its phenopacket (the
`vcfRecord`s of its genomic interpretations, as in phenopacket-store); with
`from_phenopacket=True` those become rows of the same table, with gene and
zygosity from the phenopacket and consequence, impact, AF and scores flagged
unknown/missing.
"""
from __future__ import annotations

import gzip
import math
import re
import warnings
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

import allel
import numpy as np
import torch
from torch import Tensor

from modalities.base import DataError, regular_file
from modalities.hpo import load_hpo_index
from modalities.patient_files import patient_files
from modalities.phenopacket_io import PatientRecord, VcfRecordVariant
from modalities.quality import ReadStats

BASE_COLUMNS: tuple[str, ...] = ("valid", "gene", "consequence", "impact", "zygosity", "af_neglog10", "af_missing")

# Sequence Ontology consequence terms, most severe first (Ensembl VEP's ranking).
CONSEQUENCES: tuple[str, ...] = (
    "transcript_ablation",
    "splice_acceptor_variant",
    "splice_donor_variant",
    "stop_gained",
    "frameshift_variant",
    "stop_lost",
    "start_lost",
    "transcript_amplification",
    "feature_elongation",
    "feature_truncation",
    "inframe_insertion",
    "inframe_deletion",
    "missense_variant",
    "protein_altering_variant",
    "splice_donor_5th_base_variant",
    "splice_region_variant",
    "splice_donor_region_variant",
    "splice_polypyrimidine_tract_variant",
    "incomplete_terminal_codon_variant",
    "start_retained_variant",
    "stop_retained_variant",
    "synonymous_variant",
    "coding_sequence_variant",
    "mature_miRNA_variant",
    "5_prime_UTR_variant",
    "3_prime_UTR_variant",
    "non_coding_transcript_exon_variant",
    "intron_variant",
    "NMD_transcript_variant",
    "non_coding_transcript_variant",
    "coding_transcript_variant",
    "upstream_gene_variant",
    "downstream_gene_variant",
    "TFBS_ablation",
    "TFBS_amplification",
    "TF_binding_site_variant",
    "regulatory_region_ablation",
    "regulatory_region_amplification",
    "regulatory_region_variant",
    "intergenic_variant",
    "sequence_variant",
)
IMPACTS: tuple[str, ...] = ("MODIFIER", "LOW", "MODERATE", "HIGH")
N_CONSEQUENCES = len(CONSEQUENCES) + 1
N_IMPACTS = len(IMPACTS) + 1
AF_FLOOR = 1e-6
HET, HOM_ALT = 1.0, 2.0
# GENO allelic states in phenopackets; hemizygous counts as all called alleles alt, as a haploid "1" call does.
ALLELIC_STATES = {"GENO:0000135": HET, "GENO:0000136": HOM_ALT, "GENO:0000134": HOM_ALT}

_CONSEQUENCE_RANK = {term: rank for rank, term in enumerate(CONSEQUENCES)}
_BUILD = re.compile(r"(?i)(?:grch|hg|ncbi|hs|b)(\d{2})")
_BUILD_NAMES = {"18": "NCBI36", "36": "NCBI36", "19": "GRCh37", "37": "GRCh37", "38": "GRCh38"}
_VCF_SUFFIXES = (".vcf.gz", ".vcf")
_BASES = re.compile(r"^[ACGTN]+$", re.IGNORECASE)
_OTHER_ALT = re.compile(r"^(\*|\.|<[^<>]+>|.*[\[\]].*|\.[ACGTN]+|[ACGTN]+\.)$", re.IGNORECASE)  # spanning deletion, missing, symbolic, breakend


def variant_columns(score_fields: Sequence[str] = ("CADD", "REVEL")) -> tuple[str, ...]:
    """Column layout of the variant table for a given list of score fields."""
    return BASE_COLUMNS + tuple(c for s in score_fields for c in (s, f"{s}_missing"))


VARIANT_COLUMNS: tuple[str, ...] = variant_columns()


def n_genes(hpo_cache_dir: str | None = None) -> int:
    """Size of the gene vocabulary, the 0 (unknown gene) slot included."""
    return len(load_hpo_index(hpo_cache_dir).gene_symbols) + 1


def __getattr__(name: str) -> int:
    # N_GENES needs the HPO index, so it is computed on first access rather than at import.
    if name == "N_GENES":
        return n_genes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def normalise_build(text: str) -> str | None:
    """'hg19', 'GRCh37.p13', 'hs37d5', 'b37' -> 'GRCh37'; None when no build is recognised."""
    match = _BUILD.search(text)
    return _BUILD_NAMES.get(match.group(1)) if match else None


def check_alleles(path: Path, record: str, ref: str, alts: Sequence[str]) -> None:
    """REF must be bases (A, C, G, T, N) and each ALT bases other than REF, or `*`, `.`, a symbolic `<ID>` or a breakend.

    A REF such as `Q` or `12` is a shifted or corrupt column, and an ALT equal to REF
    is no variant: reading either would score nonsense, so both are DataErrors.
    """
    if not _BASES.match(ref):
        raise DataError(path, f"REF {ref!r} is not a sequence of bases (A, C, G, T, N)", record=record, field="REF")
    for alt in alts:
        if _BASES.match(alt):
            if alt.upper() == ref.upper():
                raise DataError(path, f"ALT {alt!r} equals REF: not a variant", record=record, field="ALT")
        elif not _OTHER_ALT.match(alt):
            raise DataError(path, f"ALT {alt!r} is not bases, '*', '.', a symbolic <ID> or a breakend", record=record, field="ALT")


def consequence_code(text: str) -> int:
    """1 + index of the most severe known SO term in an '&'-joined list; 0 if none is known."""
    ranks = [_CONSEQUENCE_RANK[t] for t in re.split(r"[&,|]", text.strip()) if t in _CONSEQUENCE_RANK]
    return min(ranks) + 1 if ranks else 0


def impact_code(text: str) -> int:
    text = text.strip().upper()
    return IMPACTS.index(text) + 1 if text in IMPACTS else 0


class VariantReader:
    """Reads `<dir>/<patient_id>.vcf[.gz]`; INFO field names and score fields come from config.

    Set a field name to None or "" to not use it (its column stays 0). A multi-allelic
    record is one row (not one per ALT), annotated with the first value of each INFO
    field, i.e. the first ALT's; each such record is counted (`multiallelic_first_alt`).
    A genotype with a missing allele (e.g. `./1`) counts as heterozygous.
    A genome build other than `genome_build` (from the VCF header, the phenopacket's
    `files[].fileAttributes.genomeAssembly` or a `vcfRecord.genomeAssembly`) is an
    error, or counted with `allow_other_build=True`. A REF that is not bases or an
    ALT equal to REF is an error (`check_alleles`); a VCF path that is not a regular
    file (a named pipe) is refused before it is opened.
    """

    def __init__(
        self,
        dir: str = "vcf",
        gene_field: str | None = "GENE",
        consequence_field: str | None = "CSQ",
        impact_field: str | None = "IMPACT",
        af_field: str | None = "AF",
        score_fields: Sequence[str] = ("CADD", "REVEL"),
        max_variants: int = 64,
        genome_build: str | None = "GRCh38",
        hpo_cache_dir: str | None = None,
        allow_other_build: bool = False,
        from_phenopacket: bool = False,
    ):
        if max_variants < 1:
            raise ValueError(f"max_variants must be >= 1, got {max_variants}")
        self.dir = dir
        self.gene_field = gene_field or None
        self.consequence_field = consequence_field or None
        self.impact_field = impact_field or None
        self.af_field = af_field or None
        self.score_fields = tuple(score_fields)
        self.max_variants = int(max_variants)
        self.genome_build = normalise_build(genome_build) if genome_build else None
        if genome_build and self.genome_build is None:
            raise ValueError(f"unrecognised genome_build {genome_build!r}")
        self.hpo_cache_dir = hpo_cache_dir
        self.allow_other_build = bool(allow_other_build)
        self.from_phenopacket = bool(from_phenopacket)
        self.columns = variant_columns(self.score_fields)
        self.stats = ReadStats()

    @property
    def n_features(self) -> int:
        return len(self.columns)

    @cached_property
    def _gene_position(self) -> dict[str, int]:
        return {g: i for i, g in enumerate(load_hpo_index(self.hpo_cache_dir).gene_symbols)}

    @property
    def _string_fields(self) -> list[str]:
        return [f for f in (self.gene_field, self.consequence_field, self.impact_field) if f]

    @property
    def _numeric_fields(self) -> list[str]:
        return ([self.af_field] if self.af_field else []) + list(self.score_fields)

    def read_site(self, site_dir: Path, records: list[PatientRecord]) -> dict[str, Tensor]:
        self.stats = ReadStats()
        by_id = {r.patient_id: r for r in records}
        files = patient_files(Path(site_dir) / self.dir, _VCF_SUFFIXES, by_id, "VCF", self.stats)
        out = {pid: self.read_file(path, by_id[pid]) for pid, path in files.items()}
        if self.from_phenopacket:
            for record in records:
                if record.patient_id not in files and record.variants:
                    out[record.patient_id] = self.read_phenopacket_variants(record)
        return out

    def read_phenopacket_variants(self, record: PatientRecord) -> Tensor:
        """The phenopacket's `vcfRecord`s as a [V, F] table (no VCF for this patient)."""
        rows = [self._phenopacket_row(record, variant) for variant in record.variants[: self.max_variants]]
        self.stats.add("variants_truncated", n=max(0, len(record.variants) - self.max_variants))
        self.stats.add("patients_with_variants_from_phenopacket")
        self.stats.add("variant_rows_from_phenopacket", n=len(rows))
        return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), self.n_features)

    def _phenopacket_row(self, record: PatientRecord, variant: VcfRecordVariant) -> list[float]:
        claimed = normalise_build(variant.build) if variant.build else None
        if variant.build and claimed is None:
            raise DataError(
                record.source, f"unrecognised genome build {variant.build!r}", record=record.patient_id,
                field=f"{variant.field}.vcfRecord.genomeAssembly",
            )
        if self.genome_build and claimed and claimed != self.genome_build:
            self._other_build(record.source, claimed, record.patient_id, f"{variant.field}.vcfRecord.genomeAssembly")
        if not variant.build:
            self.stats.add("phenopacket_variants_without_build")
        zygosity = ALLELIC_STATES.get(variant.allelic_state_id)
        if zygosity is None:
            zygosity = HET
            self.stats.add("zygosity_unknown_as_het", variant.allelic_state_id or "(none)")
        row = [1.0, self._gene_code_of(variant.gene), 0.0, 0.0, zygosity, 0.0, 1.0]
        for _ in self.score_fields:
            row += [0.0, 1.0]
        return row

    def _other_build(self, path: Path, claimed: str, record: str | None, field: str) -> None:
        if not self.allow_other_build:
            raise DataError(path, f"genome build {claimed}, expected {self.genome_build}", record=record, field=field)
        self.stats.add("other_build_allowed", f"{claimed} (expected {self.genome_build})")

    def read_file(self, path: Path, record: PatientRecord | None = None) -> Tensor:
        """One patient's VCF as a [V, F] table (rarest variants first, at most `max_variants`)."""
        patient_id = record.patient_id if record else None
        regular_file(path, record=patient_id)  # a named pipe would block the read
        self._check_header(path, record)
        calls = self._read_calls(path, patient_id)
        if calls is None:
            return torch.zeros(0, self.n_features)
        rows, afs = [], []
        for v in range(len(calls["variants/POS"])):
            locus = " ".join(filter(None, (patient_id, f"{calls['variants/CHROM'][v]}:{calls['variants/POS'][v]}")))
            check_alleles(path, locus, str(calls["variants/REF"][v]), [str(a) for a in calls["variants/ALT"][v] if a])
            zygosity = _zygosity(calls["calldata/GT"][v, 0])
            if zygosity == 0:
                self.stats.add("uncalled_or_ref_dropped")
                continue
            if calls["variants/numalt"][v] > 1:
                self.stats.add("multiallelic_first_alt")
            af = float(calls[f"variants/{self.af_field}"][v]) if self.af_field else math.nan
            if not math.isnan(af) and not 0.0 <= af <= 1.0:
                raise DataError(path, f"allele frequency {af} outside [0, 1]", record=locus, field=self.af_field)
            row = [1.0, self._gene_code(calls, v), 0.0, 0.0, zygosity]
            if self.consequence_field:
                row[2] = float(consequence_code(calls[f"variants/{self.consequence_field}"][v]))
            if self.impact_field:
                row[3] = float(impact_code(calls[f"variants/{self.impact_field}"][v]))
            row += [0.0, 1.0] if math.isnan(af) else [-math.log10(max(af, AF_FLOOR)) / 6.0, 0.0]
            for score in self.score_fields:
                value = float(calls[f"variants/{score}"][v])
                row += [0.0, 1.0] if math.isnan(value) else [value, 0.0]
            rows.append(row)
            afs.append(-math.inf if math.isnan(af) else af)
        if not rows:
            return torch.zeros(0, self.n_features)
        keep = np.argsort(np.asarray(afs), kind="stable")[: self.max_variants]
        self.stats.add("variants_truncated", n=max(0, len(rows) - self.max_variants))
        return torch.tensor(np.asarray(rows, dtype=np.float32)[keep])

    def collate(self, items: list[Tensor]) -> Tensor:
        if not items:
            raise ValueError("cannot collate an empty batch")
        batch = torch.zeros(len(items), max(t.shape[0] for t in items), self.n_features)
        for i, table in enumerate(items):
            batch[i, : table.shape[0]] = table
        return batch

    def _gene_code(self, calls: dict, v: int) -> float:
        if not self.gene_field:
            return 0.0
        return self._gene_code_of(calls[f"variants/{self.gene_field}"][v])

    def _gene_code_of(self, text: str) -> float:
        for symbol in re.split(r"[&,|]", text or ""):
            if symbol.strip() in self._gene_position:
                return float(self._gene_position[symbol.strip()] + 1)
        return 0.0

    def _check_header(self, path: Path, record: PatientRecord | None) -> None:
        patient_id = record.patient_id if record else None
        opener = gzip.open if path.name.endswith(".gz") else open
        try:
            with opener(path, "rb") as stream:  # our own handle: allel leaves its own open on errors
                headers = allel.read_vcf_headers(stream)
        except Exception as err:  # allel raises RuntimeError, OSError, UnicodeDecodeError, ...
            raise DataError(path, f"cannot parse VCF header: {err}", record=patient_id, field="header") from err
        for name in self._string_fields + self._numeric_fields:
            if name not in headers.infos:
                raise DataError(path, f"no ##INFO=<ID={name}> in the header", record=patient_id, field=name)
        if "GT" not in headers.formats:
            raise DataError(path, "no ##FORMAT=<ID=GT> in the header", record=patient_id, field="GT")
        if len(headers.samples) != 1:
            raise DataError(
                path, f"expected one sample, found {len(headers.samples)}", record=patient_id, field="samples"
            )
        if self.genome_build:
            for claimed, where in self._claimed_builds(path, headers.headers, record):
                if claimed and claimed != self.genome_build:
                    if not self.allow_other_build:
                        raise DataError(
                            path,
                            f"genome build {claimed} (from {where}), expected {self.genome_build}",
                            record=patient_id,
                            field=where.split(" ")[0],
                        )
                    self.stats.add("other_build_allowed", f"{claimed} (expected {self.genome_build})")

    def _claimed_builds(self, path: Path, header_lines: list[str], record: PatientRecord | None):
        for line in header_lines:
            for key in ("##reference", "##assembly"):
                if line.startswith(key + "="):
                    yield normalise_build(line.split("=", 1)[1]), key
        if record is None:
            return
        for j, (uri, attributes) in enumerate(record.files):
            if "genomeAssembly" in attributes and Path(urlparse(uri).path).name == path.name:
                yield normalise_build(attributes["genomeAssembly"]), f"files[{j}].fileAttributes.genomeAssembly of {record.source}"

    def _read_calls(self, path: Path, patient_id: str | None) -> dict | None:
        fields = [f"variants/{f}" for f in self._string_fields + self._numeric_fields]
        fields += ["variants/CHROM", "variants/POS", "variants/REF", "variants/ALT", "variants/numalt", "calldata/GT"]
        names = self._string_fields + self._numeric_fields
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                calls = allel.read_vcf(
                    str(path),
                    fields=fields,
                    numbers={f: 1 for f in names},
                    types={**{f: "object" for f in self._string_fields}, **{f: "f8" for f in self._numeric_fields}},
                )
            except Exception as err:
                raise DataError(path, f"cannot parse VCF: {err}", record=patient_id) from err
        for warning in caught:
            text = str(warning.message).replace("\x00", "")  # allel pads CHROM with NULs
            if text.startswith("error parsing"):
                field = re.search(r"field: ([^;]+)", text)
                record, name = self._locate_parse_error(path, text)
                raise DataError(
                    path,
                    f"cannot parse VCF: {text}",
                    record=" ".join(filter(None, (patient_id, record))) or None,
                    field=name or (field.group(1) if field else None),
                )
        return calls

    def _locate_parse_error(self, path: Path, text: str) -> tuple[str | None, str | None]:
        """allel names the variant and 'INFO'; find the locus and the numeric INFO field that is not a number."""
        where = re.search(r"variant: (\d+) \((\S+) ?:(\d+)\)", text)
        if not where:
            return None, None
        chrom, pos = where.group(2), where.group(3)
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                columns = line.rstrip("\n").split("\t")
                if line.startswith("#") or len(columns) < 8 or columns[0] != chrom or columns[1] != pos:
                    continue
                info = dict(item.partition("=")[::2] for item in columns[7].split(";"))
                for name in self._numeric_fields:
                    for value in info.get(name, ".").split(","):
                        try:
                            float(value) if value != "." else None
                        except ValueError:
                            return f"{chrom}:{pos}", name
                return f"{chrom}:{pos}", None
        return f"{chrom}:{pos}", None


def _zygosity(genotype: np.ndarray) -> float:
    """1 het, 2 hom-alt, 0 for hom-ref or a missing call (row dropped)."""
    called = genotype[genotype >= 0]
    if called.size == 0 or not (called > 0).any():
        return 0.0
    if called.size == genotype.size and (called == called[0]).all():
        return HOM_ALT
    return HET
