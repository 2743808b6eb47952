"""Annotated variants of each patient (one VCF per patient) as a [V, F] feature table.

Each called variant becomes a row of `VARIANT_COLUMNS`: categorical columns
(gene, consequence, impact) hold `1 + index` into fixed vocabularies (0 = unknown)
so the encoder can embed them; numeric columns come with missing indicators, since
a missing allele frequency or score is common and is not the same as zero.
VCFs are read with scikit-allel; the annotation is expected in INFO fields (as
written by VEP/SnpEff-style pipelines flattened to one value per field).
"""
from __future__ import annotations

import gzip
import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

import allel
import numpy as np
import torch
from torch import Tensor

from modalities.base import DataError
from modalities.hpo import load_hpo_index
from modalities.phenopacket_io import PatientRecord

log = logging.getLogger(__name__)

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

_CONSEQUENCE_RANK = {term: rank for rank, term in enumerate(CONSEQUENCES)}
_BUILD = re.compile(r"(?i)(?:grch|hg|ncbi|hs|b)(\d{2})")
_BUILD_NAMES = {"18": "NCBI36", "36": "NCBI36", "19": "GRCh37", "37": "GRCh37", "38": "GRCh38"}
_VCF_SUFFIXES = (".vcf.gz", ".vcf")


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


def consequence_code(text: str) -> int:
    """1 + index of the most severe known SO term in an '&'-joined list; 0 if none is known."""
    ranks = [_CONSEQUENCE_RANK[t] for t in re.split(r"[&,|]", text.strip()) if t in _CONSEQUENCE_RANK]
    return min(ranks) + 1 if ranks else 0


def impact_code(text: str) -> int:
    text = text.strip().upper()
    return IMPACTS.index(text) + 1 if text in IMPACTS else 0


class VariantReader:
    """Reads `<dir>/<patient_id>.vcf[.gz]`; INFO field names and score fields come from config.

    Set a field name to None or "" to not use it (its column stays 0). Multi-allelic
    records use the first value of each INFO field. A genotype with a missing allele
    (e.g. `./1`) counts as heterozygous.
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
        self.columns = variant_columns(self.score_fields)
        self.stats: Counter[str] = Counter()

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
        self.stats = Counter()
        folder = Path(site_dir) / self.dir
        if not folder.is_dir():
            return {}
        by_id = {r.patient_id: r for r in records}
        files: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            patient_id = _strip_suffix(path.name, _VCF_SUFFIXES)
            if patient_id is None:
                continue
            if patient_id not in by_id:
                self.stats["files_without_phenopacket"] += 1
                continue
            if patient_id in files:
                raise DataError(path, f"two VCFs for one patient (also {files[patient_id].name})", record=patient_id)
            files[patient_id] = path
        if self.stats["files_without_phenopacket"]:
            log.warning(
                "%s: ignored %d VCFs of patients without a phenopacket", folder, self.stats["files_without_phenopacket"]
            )
        return {pid: self.read_file(path, by_id[pid]) for pid, path in files.items()}

    def read_file(self, path: Path, record: PatientRecord | None = None) -> Tensor:
        """One patient's VCF as a [V, F] table (rarest variants first, at most `max_variants`)."""
        patient_id = record.patient_id if record else None
        self._check_header(path, record)
        calls = self._read_calls(path, patient_id)
        if calls is None:
            return torch.zeros(0, self.n_features)
        rows, afs = [], []
        for v in range(len(calls["variants/POS"])):
            zygosity = _zygosity(calls["calldata/GT"][v, 0])
            if zygosity == 0:
                self.stats["uncalled_or_ref_dropped"] += 1
                continue
            af = float(calls[f"variants/{self.af_field}"][v]) if self.af_field else math.nan
            if not math.isnan(af) and not 0.0 <= af <= 1.0:
                locus = f"{patient_id} {calls['variants/CHROM'][v]}:{calls['variants/POS'][v]}"
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
        self.stats["variants_truncated"] += max(0, len(rows) - self.max_variants)
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
        for symbol in re.split(r"[&,|]", calls[f"variants/{self.gene_field}"][v]):
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
                    raise DataError(
                        path,
                        f"genome build {claimed} (from {where}), expected {self.genome_build}",
                        record=patient_id,
                        field=where.split(" ")[0],
                    )

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
        fields += ["variants/CHROM", "variants/POS", "calldata/GT"]
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
            text = str(warning.message)
            if text.startswith("error parsing"):
                field = re.search(r"field: ([^;]+)", text)
                raise DataError(
                    path, f"cannot parse VCF: {text}", record=patient_id, field=field.group(1) if field else None
                )
        return calls


def _zygosity(genotype: np.ndarray) -> float:
    """1 het, 2 hom-alt, 0 for hom-ref or a missing call (row dropped)."""
    called = genotype[genotype >= 0]
    if called.size == 0 or not (called > 0).any():
        return 0.0
    if called.size == genotype.size and (called == called[0]).all():
        return HOM_ALT
    return HET


def _strip_suffix(name: str, suffixes: tuple[str, ...]) -> str | None:
    for suffix in suffixes:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None
