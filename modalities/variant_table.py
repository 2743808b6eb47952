"""A labelled variant table (one row per variant: gene, scores, allele frequency, label) as a consortium of labs.

`data.loader: modalities.variant_table.load_variant_table` (conf/data/variant_table.yaml).
Each genomic lab holds only its own labelled variants; here one table is cut
into labs (modalities/variant_labs.py), each lab's rows are split by held-out
genes, and every row becomes the `tabular` modality's feature vector
(modalities/variant_features.py: values with missing indicators, nothing dropped).

The table may come from anywhere as long as it has a gene, a label and the
score columns: `data.columns` and `data.features.<name>.column` say where each
is, and `data.rename` maps another table's column names onto those (so the same
experiment runs on another lab's export given only its path and the mapping).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from modalities.base import DataError, Modality, parse_number
from modalities.consortium import Consortium
from modalities.dataset import SiteDataset
from modalities.labels import LabelSpace
from modalities.quality import ReadStats, collection_quality, min_count_from, repeats
from modalities.site_data import SiteData
from modalities.splits import SPLITS
from modalities.tables import TableReader
from modalities.variant_features import (
    FeatureSpec,
    VariantEncoding,
    check_and_transform,
    encoded_names,
    feature_specs,
)
from modalities.variant_labs import assign_labs, holdout_split

TABULAR = Modality.TABULAR.value
LOCUS_ROLES = ("chrom", "pos", "ref", "alt")


class VariantFeatureReader(TableReader):
    """The `tabular` reader for variant rows; it carries the encoding the run stores for scoring later."""

    def __init__(self, encoding: VariantEncoding | None = None):
        self.encoding = encoding


@dataclass
class VariantRows:
    """A table's variants: raw feature values [N, F] (NaN = missing) and what identifies each row."""

    path: Path
    records: list[str]  # "row <line>" for errors
    keys: list[str]  # chrom:pos:ref>alt when the table has them, else the record
    columns: dict[str, list[str]]  # role (gene, chrom, ..., lab) -> values
    raw: np.ndarray
    labels: list[str] | None

    def role(self, name: str) -> list[str] | None:
        return self.columns.get(name)


def read_variant_table(
    path: str | Path,
    specs: Sequence[FeatureSpec],
    columns: Mapping[str, str | None],
    missing_values: Sequence[str] = ("",),
    label_mapping: Mapping[str, str] | None = None,
    rename: Mapping[str, str] | None = None,
    sep: str | None = None,
    required: Sequence[str] = ("gene", "label"),
) -> VariantRows:
    """Read and validate a table: every configured column present, every number a number, every label mapped."""
    path = Path(path)
    frame = _read_frame(path, sep, rename)
    roles = {role: column for role, column in columns.items() if column}
    for role in required:
        if role not in roles:
            raise ValueError(f"data.columns.{role} is not set, but reading {path} needs it")
    _require(path, frame, list(roles.values()) + [s.column for s in specs])
    records = [f"row {i + 2}" for i in range(len(frame))]  # line number in the file (the header is line 1)
    markers = {str(m).strip() for m in missing_values} | {""}
    raw = np.array(
        [[parse_number(v, markers, path, r, s.column) for v, r in zip(frame[s.column], records)] for s in specs], dtype=np.float64
    ).T.reshape(len(frame), len(specs))
    values = {role: frame[column].str.strip().tolist() for role, column in roles.items() if role != "label"}
    labels = _labels(path, frame[roles["label"]], records, label_mapping, roles["label"]) if "label" in roles else None
    has_locus = all(role in values for role in LOCUS_ROLES)
    keys = [f"{c}:{p}:{r}>{a}" for c, p, r, a in zip(*(values[k] for k in LOCUS_ROLES))] if has_locus else list(records)
    return VariantRows(path, records, keys, values, raw, labels)


def load_variant_table(cfg: DictConfig, seed: int) -> Consortium:
    """The consortium loader: labs (sites) of held-out-gene splits, the encoding fitted on the labs' training rows."""
    specs = feature_specs(OmegaConf.to_container(cfg.features, resolve=True))
    _check_width(cfg, specs)
    label_space = _label_space(cfg)
    columns = dict(OmegaConf.to_container(cfg.columns, resolve=True))
    lab_column = cfg.labs.get("column") if cfg.labs.get("by") == "column" else None
    rows = read_variant_table(
        cfg.path, specs, columns | ({"lab": lab_column} if lab_column else {}), cfg.get("missing_values") or ("",),
        OmegaConf.to_container(cfg.label_mapping, resolve=True) if cfg.get("label_mapping") else None,
        OmegaConf.to_container(cfg.rename, resolve=True) if cfg.get("rename") else None, cfg.get("sep"),
        required=("gene", "label") + (("chrom",) if cfg.labs.get("by") == "chromosome" else ()),
    )
    labs, names = assign_labs(rows.role("gene"), rows.role("chrom"), rows.role("lab"), cfg.labs, seed)
    split = holdout_split(rows.role("gene"), labs, cfg.get("holdout") or {}, seed)
    transformed = check_and_transform(rows.raw, specs, rows.path, rows.records)
    train_of = {lab: [i for i, (l, s) in enumerate(zip(labs, split)) if l == lab and s == "train"] for lab in names}
    empty = [lab for lab, train in train_of.items() if not train]
    if empty:
        raise DataError(rows.path, f"labs {empty} have no training rows: fewer labs, other shares or a smaller holdout")
    encoding = VariantEncoding.fit([transformed[train_of[lab]] for lab in names], specs)
    values = torch.from_numpy(encoding.encode(transformed))
    targets = _targets(rows, label_space)
    sites, quality, min_count = [], {}, min_count_from(cfg)
    for lab in names:
        members = [i for i, l in enumerate(labs) if l == lab]
        splits = {
            name: SiteDataset([_item(lab, i, rows, values, targets) for i in members if split[i] == name], [TABULAR]) for name in SPLITS
        }
        sites.append(SiteData(name=lab, modalities=(TABULAR,), splits=splits))
        quality[lab] = collection_quality(splits, TABULAR, label_space.labels, min_count, **_lab_quality(rows, specs, members))
    return Consortium(sites, label_space, [TABULAR], {TABULAR: VariantFeatureReader(encoding)}, quality)


def _item(lab: str, i: int, rows: VariantRows, values: torch.Tensor, targets: list[int]) -> dict[str, Any]:
    """One variant as a dataset item; `meta.raw` keeps the raw scores for the single-score baselines."""
    meta = {"site": lab, "gene": rows.role("gene")[i], "raw": rows.raw[i], "record": rows.records[i]}
    return {"patient_id": f"{lab}/{rows.keys[i]}", "label": targets[i], "inputs": {TABULAR: values[i]}, "meta": meta}


def _lab_quality(rows: VariantRows, specs: Sequence[FeatureSpec], members: list[int]) -> dict[str, Any]:
    """A lab's share of missing values per score and its repeated variants (aggregates only)."""
    missing = np.isnan(rows.raw[members])
    stats = ReadStats()
    for j, spec in enumerate(specs):
        if missing[:, j].any():
            stats.add("missing_indicator_set", spec.name, int(missing[:, j].sum()))
    n = len(members)
    fields = {"rows_read": n, "missing_share": {s.name: round(float(missing[:, j].mean()), 4) if n else None for j, s in enumerate(specs)}}
    return {"fields": fields, "repairs": stats, "duplicates": {"repeated_variants": repeats([rows.keys[i] for i in members])}}


def _check_width(cfg: DictConfig, specs: Sequence[FeatureSpec]) -> None:
    width = len(encoded_names(specs))
    if cfg.get("n_features") is not None and int(cfg.n_features) != width:
        raise ValueError(f"data.n_features is {cfg.n_features} but data.features encode {width} columns (a value and a missing indicator each): set data.n_features={width}")


def _label_space(cfg: DictConfig) -> LabelSpace:
    labels = [str(label) for label in cfg.labels]
    if len(labels) != 2:
        raise ValueError(f"data.labels must name two classes (benign, pathogenic), got {labels}")
    mapped = {str(v) for v in (cfg.get("label_mapping") or {}).values()}
    if mapped - set(labels):
        raise ValueError(f"data.label_mapping maps to {sorted(mapped - set(labels))}, which data.labels {labels} does not name")
    return LabelSpace(labels)


def _targets(rows: VariantRows, label_space: LabelSpace) -> list[int]:
    for label, record in zip(rows.labels, rows.records):
        if label not in label_space:
            raise DataError(rows.path, f"label {label!r} is not one of data.labels {list(label_space.labels)}", record=record, field="label")
    return [label_space.index(label) for label in rows.labels]


def _read_frame(path: Path, sep: str | None, rename: Mapping[str, str] | None) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(path, "file not found")
    sep = sep or ("," if path.suffix.lower() == ".csv" else "\t")
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot parse table: {err}") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.rename(columns=dict(rename or {}))


def _require(path: Path, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    for column in columns:
        if column not in frame.columns:
            raise DataError(path, f"no column {column!r} (columns: {', '.join(frame.columns)})", field=column)


def _labels(path: Path, values: pd.Series, records: list[str], mapping: Mapping[str, str] | None, column: str) -> list[str]:
    """Labels through `data.label_mapping` (e.g. Likely_pathogenic -> pathogenic); a value it lacks is a DataError."""
    out = []
    for raw, record in zip(values.str.strip(), records):
        label = mapping.get(raw) if mapping else raw
        if label is None or raw == "":
            raise DataError(path, f"label {raw!r} is not in data.label_mapping ({', '.join(mapping or {})})", record=record, field=column)
        out.append(str(label))
    return out
