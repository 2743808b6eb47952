"""Pathogenicity of candidate variants from the project's own variant model (an `experiment=vus` run).

The variant model was trained by the labs on ClinVar-labelled variants and calibrated
on held-out genes (federation/tasks/vus/scoring.py); its posterior at its configured prior
replaces the mean of in-silico scores in the genotype likelihood ratio. A candidate
row offers what the diagnosis reader keeps: allele frequency (as MAF) and the
configured scores (e.g. CADD, REVEL) under the same names as the model's features;
the model's other features are missing, as its missing indicators allow. A row
that offers none of the model's features keeps the in-silico/impact fallback
(models/genotype_likelihood.py) and is counted.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.genotype_likelihood import GenotypeSettings, row_pathogenicity

FREQUENCY_FEATURES = ("MAF", "AF")


class VariantModelPathogenicity:
    def __init__(self, run_dir: str | Path):
        from federation.tasks.vus.scoring import VariantRun

        self.run_dir = Path(run_dir)
        self.run = VariantRun.load(self.run_dir)
        self.prior = float(self.run.cfg.vus_evaluation.evidence.prior)

    def __call__(self, rows: np.ndarray, columns: Sequence[str], settings: GenotypeSettings, counts: Counter | None = None) -> np.ndarray:
        from modalities.variant_features import check_and_transform

        raw = self.raw_features(rows, columns)
        offered = ~np.isnan(raw).all(1)
        s = np.zeros(len(rows), np.float32)
        if (~offered).any():
            s[~offered] = row_pathogenicity(rows[~offered], columns, settings, counts)
        if offered.any():
            records = [f"candidate row {i}" for i in np.flatnonzero(offered)]
            transformed = check_and_transform(raw[offered], self.run.encoding.specs, self.run_dir, records)
            z = self.run.log_odds(self.run.encoding.encode(transformed))
            posterior, _, _ = self.run.calibration.posterior(z, self.prior)
            s[offered] = posterior.astype(np.float32)
        if counts is not None:
            counts["rows_scored_by_variant_model"] += int(offered.sum())
            counts["rows_without_variant_model_features"] += int((~offered).sum())
        return s

    def raw_features(self, rows: np.ndarray, columns: Sequence[str]) -> np.ndarray:
        """[V, model features] raw values, NaN where the row does not offer the feature."""
        col = {c: i for i, c in enumerate(columns)}
        specs = self.run.encoding.specs
        raw = np.full((len(rows), len(specs)), np.nan)
        for j, spec in enumerate(specs):
            if spec.name in FREQUENCY_FEATURES and "af_neglog10" in col:
                known = rows[:, col["af_missing"]] < 0.5
                raw[known, j] = 10.0 ** (-6.0 * rows[known, col["af_neglog10"]])
            elif spec.name in col and f"{spec.name}_missing" in col:
                known = rows[:, col[f"{spec.name}_missing"]] < 0.5
                raw[known, j] = rows[known, col[spec.name]]
        return raw
