"""Score variants of unknown significance with a trained `experiment=vus` run.

The run folder holds everything a score depends on: the model (model.safetensors
with config.yaml), the feature encoding fitted on the labs' training rows
(variant_encoding.json) and the calibrator fitted on held-out genes
(calibration.json). A variant is read from a VCF (modalities/variant_vcf.py) or
a table (modalities/variant_table.py), encoded exactly as the training rows
were, and reported as a posterior probability at the configured prior with its
bootstrap interval, a likelihood ratio, and an evidence level
(federation/tasks/vus/evidence.py).

Two rules keep a score honest about what the model learnt. A missing value can
be filled where the training table had a value meaning the same (`fill_missing`:
AF '.' is 0, absent from gnomAD, as the ClinVar table records it), counted. A
variant missing a feature that every training row had (BayesDel and MutPred2 in
the ClinVar table) still gets a probability, but its evidence is "uncertain":
the model never learnt what that missing indicator means.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from federation.predict import load_run
from federation.settings import existing
from federation.tasks.vus.calibration import VariantCalibration
from federation.tasks.vus.evaluation import log_odds
from federation.tasks.vus.evidence import (
    UNCERTAIN,
    evidence_config,
    evidence_levels,
    thresholds,
)
from federation.tasks.vus.output import annotate_vcf, new_vcf, ordered_columns, write_tsv
from modalities.base import DataError
from modalities.variant_features import VariantEncoding, check_and_transform
from modalities.variant_table import LOCUS_ROLES, read_variant_table
from modalities.variant_vcf import VcfVariants, read_scoring_vcf

VCF_SUFFIXES = (".vcf", ".vcf.gz")
TABULAR = "tabular"
FIRST_COLUMNS = ("chrom", "pos", "id", "ref", "alt", "gene", "probability", "low", "high", "likelihood_ratio", "evidence", "missing_features",
                 "missing_unseen_in_training")
BATCH = 65536


@dataclass
class VariantRun:
    """A trained run as the scorer needs it."""

    cfg: DictConfig
    model: torch.nn.Module
    positive: int
    encoding: VariantEncoding
    calibration: VariantCalibration

    @classmethod
    def load(cls, run_dir: str | Path) -> "VariantRun":
        run_dir = Path(run_dir)
        encoding = VariantEncoding.load(run_dir / "variant_encoding.json")
        calibration = VariantCalibration.load(run_dir / "calibration.json")
        cfg, model, labels, _ = load_run(run_dir)
        positive = str(cfg.get("vus_evaluation", {}).get("positive", "pathogenic"))
        if positive not in labels:
            raise DataError(run_dir / "model.safetensors", f"the model's labels {labels} do not include {positive!r}", field="labels")
        return cls(cfg, model, labels.index(positive), encoding, calibration)

    @torch.no_grad()
    def log_odds(self, encoded: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(encoded), BATCH):
            x = torch.from_numpy(encoded[start : start + BATCH])
            out.append(log_odds(self.model({TABULAR: x}, torch.ones(len(x), 1, dtype=torch.bool)), self.positive))
        return np.concatenate(out)


@dataclass
class Scored:
    frame: pd.DataFrame
    source: Path
    is_vcf: bool
    counts: dict[str, Any] = field(default_factory=dict)


def score_file(cfg: DictConfig) -> Scored:
    """Read `cfg.input`, score every variant with the run at `cfg.run_dir` (see conf/score_vus.yaml)."""
    run = VariantRun.load(existing("run_dir", cfg.run_dir, folder=True))
    path = existing("input", cfg.input, folder=False)  # a named pipe would block the reader
    is_vcf = path.name.lower().endswith(VCF_SUFFIXES)
    frame, raw, records, counts = _read_vcf(cfg, run, path) if is_vcf else _read_table(cfg, run, path)
    if not len(raw):  # a VCF with a header only: nothing to score is an answer, not an error
        counts |= {"variants_scored": 0, "evidence_withheld_unseen_missingness": 0, "evidence": {}}
        scores = ("probability", "low", "high", "likelihood_ratio", "evidence", "missing_features", "missing_unseen_in_training", "record")
        empty = frame.assign(**{c: [] for c in scores})
        return Scored(ordered_columns(empty, FIRST_COLUMNS), path, is_vcf, counts)
    raw, counts["filled_missing"] = fill_missing(raw, run.encoding.specs, cfg.get("fill_missing") or {})
    transformed = check_and_transform(raw, run.encoding.specs, path, records)
    z = run.log_odds(run.encoding.encode(transformed))
    settings = evidence_config(OmegaConf.to_container(cfg.evidence, resolve=True))
    posterior, low, high = run.calibration.posterior(z, settings["prior"], float(cfg.calibration.interval))
    evidence = np.asarray(evidence_levels(posterior, low, high, thresholds(**settings), bool(cfg.evidence.conservative)), dtype=object)
    unseen = run.encoding.unseen_missingness(transformed)
    evidence[unseen] = UNCERTAIN  # no evidence from an extrapolation (see VariantEncoding.unseen_missingness)
    names = np.array([s.name for s in run.encoding.specs])
    frame = frame.assign(
        probability=posterior,
        low=low,
        high=high,
        likelihood_ratio=run.calibration.point.likelihood_ratio(z),
        evidence=evidence,
        missing_features=[",".join(names[np.isnan(row)]) for row in raw],
        missing_unseen_in_training=unseen,
        record=records,
    )
    counts |= {"variants_scored": len(frame), "evidence_withheld_unseen_missingness": int(unseen.sum())}
    counts |= {"evidence": frame["evidence"].value_counts().to_dict()}
    return Scored(ordered_columns(frame, FIRST_COLUMNS), path, is_vcf, counts)


def write_scored(scored: Scored, out_dir: Path, prior: float, stem: str | None = None) -> dict[str, Path]:
    """`<stem>.vus.tsv` and `<stem>.vus.vcf` in `out_dir` (a table without chrom/pos/ref/alt gets the TSV only)."""
    stem = stem or (scored.source.name.removesuffix(".gz").removesuffix(".vcf") if scored.is_vcf else scored.source.stem)
    paths = {}
    if scored.is_vcf:  # the VCF first: re-reading the input is the step that can still fail
        paths["vcf"] = out_dir / f"{stem}.vus.vcf"
        annotate_vcf(scored.source, paths["vcf"], scored.frame, prior)
    elif all(c in scored.frame.columns for c in LOCUS_ROLES):
        paths["vcf"] = out_dir / f"{stem}.vus.vcf"
        new_vcf(paths["vcf"], scored.frame, prior)
    paths["tsv"] = out_dir / f"{stem}.vus.tsv"
    write_tsv(paths["tsv"], scored.frame.drop(columns=["record_index", "allele_index"], errors="ignore"))
    return paths


def fill_missing(raw: np.ndarray, specs, fill: dict) -> tuple[np.ndarray, dict[str, int]]:
    """Missing values -> a configured value (`fill_missing: {MAF: 0}`: absent from gnomAD is a frequency of 0,
    which is how the training table records it); returns the counts filled per feature."""
    raw, filled = raw.copy(), {}
    for j, spec in enumerate(specs):
        if spec.name in fill and fill[spec.name] is not None:
            gaps = np.isnan(raw[:, j])
            raw[gaps, j] = float(fill[spec.name])
            filled[spec.name] = int(gaps.sum())
    return raw, filled


def _read_vcf(cfg: DictConfig, run: VariantRun, path: Path):
    fields = OmegaConf.to_container(cfg.info_fields, resolve=True)
    build = OmegaConf.to_container(cfg.build, resolve=True)
    try:
        v = read_scoring_vcf(path, run.encoding.specs, fields, build, str(cfg.multiallelic))
    except DataError as error:
        if error.field != "records":  # raised only after the header passed every check, when there is no record
            raise
        v = VcfVariants(path, raw=np.empty((0, len(run.encoding.specs))))
    frame = pd.DataFrame(
        {"chrom": v.chrom, "pos": v.pos, "id": v.ids, "ref": v.ref, "alt": v.alt, "record_index": v.record_index, "allele_index": v.allele_index}
    )
    return frame, v.raw, v.records, {"vcf_records": v.n_records, **v.counts.as_dict()}


def _read_table(cfg: DictConfig, run: VariantRun, path: Path):
    table = cfg.get("table") or {}
    data = run.cfg.data
    columns = OmegaConf.to_container(table.get("columns") or data.get("columns") or {}, resolve=True)
    columns = {role: column for role, column in columns.items() if role != "label"}  # labels are not needed to score
    rows = read_variant_table(
        path, run.encoding.specs, columns, table.get("missing_values") or data.get("missing_values") or ("",),
        rename=OmegaConf.to_container(table.rename, resolve=True) if table.get("rename") else None, sep=table.get("sep"), required=(),
    )
    frame = pd.DataFrame({role: values for role, values in rows.columns.items()})
    return frame, rows.raw, rows.records, {"table_rows": len(rows.records)}
