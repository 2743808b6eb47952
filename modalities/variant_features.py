"""Variant features as the model sees them: allele frequency and in-silico scores, each with a missing indicator.

Labs annotate with different tools and tool versions, so a score is often
missing for a variant. That is normal, not a reason to drop the row: each
feature is transformed (allele frequency as -log10, since rarity matters on a
log scale), standardised with the consortium's training mean and sd, set to 0
(the mean) where missing, and followed by a 0/1 missing indicator, so the model
can learn what "no REVEL here" means.

The mean and sd are combined from per-lab aggregates (count, sum and sum of
squares of the present values): that is all a lab shares about its rows. The
encoding is stored with the run (`variant_encoding.json`), so a variant scored
later is encoded exactly as the training rows were.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalities.base import DataError, check_option

TRANSFORMS = ("none", "neglog10")
DIRECTIONS = ("high", "low")
MISSING_SUFFIX = ":missing"


@dataclass(frozen=True)
class FeatureSpec:
    """One model input: where its raw value comes from and how it is transformed.

    `pathogenic`: which end of the raw value points to pathogenic ("low" for SIFT,
    FATHMM and allele frequency); single-score baselines are oriented by it, never
    by the test labels. `in_silico: false` keeps a feature (allele frequency) out of
    the single in-silico score comparison. `range`: allowed raw values, e.g. [0, 1]
    for a frequency, so a VCF with AF in percent fails instead of scoring nonsense.
    """

    name: str
    column: str
    transform: str = "none"
    floor: float = 1e-6
    pathogenic: str = "high"
    in_silico: bool = True
    range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        check_option(f"data.features.{self.name}.transform", self.transform, TRANSFORMS)
        check_option(f"data.features.{self.name}.pathogenic", self.pathogenic, DIRECTIONS)


def feature_specs(features: Mapping[str, Mapping[str, Any]]) -> list[FeatureSpec]:
    """`data.features` (name -> {column, transform, ...}) as specs, in config order."""
    if not features:
        raise ValueError("data.features is empty: name at least one score column")
    specs = []
    for name, entry in features.items():
        entry = dict(entry)
        if entry.get("range") is not None:
            entry["range"] = tuple(float(v) for v in entry["range"])
        specs.append(FeatureSpec(name=str(name), **entry))
    return specs


def encoded_names(specs: Sequence[FeatureSpec]) -> list[str]:
    """The encoded vector's columns: every feature's standardised value, then every missing indicator."""
    return [s.name for s in specs] + [s.name + MISSING_SUFFIX for s in specs]


def check_and_transform(raw: np.ndarray, specs: Sequence[FeatureSpec], path: str | Path, records: Sequence[str]) -> np.ndarray:
    """Raw values [N, F] (NaN = missing) -> transformed values; a value outside its `range` is a DataError."""
    out = np.array(raw, dtype=np.float64, copy=True)
    for j, spec in enumerate(specs):
        column = out[:, j]
        if spec.range is not None:
            low, high = spec.range
            bad = np.flatnonzero(~np.isnan(column) & ((column < low) | (column > high)))
            if bad.size:
                i = int(bad[0])
                raise DataError(path, f"value {column[i]:g} outside [{low:g}, {high:g}]", record=records[i], field=spec.column)
        if spec.transform == "neglog10":
            negative = np.flatnonzero(column < 0)
            if negative.size:
                i = int(negative[0])
                raise DataError(path, f"value {column[i]:g} is negative; -log10 needs a frequency", record=records[i], field=spec.column)
            out[:, j] = -np.log10(np.maximum(column, spec.floor))
    return out


@dataclass
class Moments:
    """What a lab shares about its training rows: per feature, count, sum and sum of squares of present values."""

    n: np.ndarray
    total: np.ndarray
    squares: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> "Moments":
        present = ~np.isnan(values)
        filled = np.where(present, values, 0.0)
        return cls(present.sum(0).astype(np.float64), filled.sum(0), (filled**2).sum(0))

    def __add__(self, other: "Moments") -> "Moments":
        return Moments(self.n + other.n, self.total + other.total, self.squares + other.squares)


def mean_sd(moments: Moments, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled mean and sd (ddof 1) from summed moments; a feature never present anywhere cannot be standardised."""
    absent = [name for name, n in zip(names, moments.n) if n < 2]
    if absent:
        raise ValueError(f"features {absent} have fewer than 2 values in the labs' training rows: drop them from data.features")
    mean = moments.total / moments.n
    variance = np.maximum(moments.squares - moments.n * mean**2, 0.0) / (moments.n - 1)
    sd = np.sqrt(variance)
    return mean, np.where(sd > 0, sd, 1.0)


@dataclass
class VariantEncoding:
    """Transformed value -> (value - mean) / sd, 0 where missing, then the missing indicators."""

    specs: list[FeatureSpec]
    mean: np.ndarray
    sd: np.ndarray
    facts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, per_lab: Sequence[np.ndarray], specs: Sequence[FeatureSpec]) -> "VariantEncoding":
        """From each lab's transformed training values (only their Moments are combined)."""
        total = sum((Moments.of(values) for values in per_lab), Moments.of(np.empty((0, len(specs)))))
        mean, sd = mean_sd(total, [s.name for s in specs])
        n_rows = sum(len(values) for values in per_lab)
        return cls(list(specs), mean, sd, {"n_train_rows": int(n_rows), "n_train_present": total.n.astype(int).tolist()})

    @property
    def names(self) -> list[str]:
        return encoded_names(self.specs)

    def encode(self, transformed: np.ndarray) -> np.ndarray:
        """Transformed values [N, F] (NaN = missing) -> [N, 2F] float32."""
        missing = np.isnan(transformed)
        standard = np.where(missing, 0.0, (transformed - self.mean) / self.sd)
        return np.concatenate([standard, missing.astype(np.float64)], axis=1).astype(np.float32)

    def unseen_missingness(self, transformed: np.ndarray) -> np.ndarray:
        """Rows missing a feature that was present in every training row: the model never learnt what its
        missing indicator means there, so its score for such a row is an extrapolation."""
        if "n_train_rows" not in self.facts:
            return np.zeros(len(transformed), dtype=bool)
        always = np.asarray(self.facts["n_train_present"]) >= int(self.facts["n_train_rows"])
        return (np.isnan(transformed) & always).any(axis=1)

    def to_json(self) -> str:
        specs = [asdict(s) | {"range": list(s.range) if s.range else None} for s in self.specs]
        return json.dumps({"features": specs, "mean": self.mean.tolist(), "sd": self.sd.tolist(), **self.facts}, indent=2)

    @classmethod
    def load(cls, path: str | Path) -> "VariantEncoding":
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "no variant encoding here: is this the run folder of `experiment=vus`?")
        data = json.loads(path.read_text())
        specs = feature_specs({f["name"]: {k: v for k, v in f.items() if k != "name"} for f in data["features"]})
        facts = {k: v for k, v in data.items() if k not in ("features", "mean", "sd")}
        return cls(specs, np.asarray(data["mean"], dtype=np.float64), np.asarray(data["sd"], dtype=np.float64), facts)
