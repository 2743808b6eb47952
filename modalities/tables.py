"""Tabular sites: one row per patient in a CSV/TSV, read with pandas into feature vectors.

A consortium of tables is either one file per site (`sites: [{name, path}]`) or
one file with a site column (`table.site_column`). Every site must encode its
rows into the same feature vector, so the columns and the one-hot vocabulary of
categorical columns come from config (`table.numeric`, `table.categorical`),
never from one site's data. The feature names are `feature_names(table)`.

FLamby's Fed-Heart-Disease protocol (Ogier du Terrail et al., NeurIPS 2022
Datasets and Benchmarks) is expressible here: drop columns, drop rows with
missing values, one-hot with drop_first, a per-site train/test split with
scikit-learn's `train_test_split` (stratified, fixed random_state), and
z-scoring with each site's training statistics (conf/data/heart.yaml).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from modalities.base import DataError, Modality, parse_number, regular_file
from modalities.consortium import Consortium
from modalities.dataset import SiteDataset
from modalities.labels import LabelSpace
from modalities.quality import (
    ReadStats,
    collection_quality,
    min_count_from,
    repeats,
    table_read_quality,
)
from modalities.site_data import SiteData
from modalities.splits import SPLITS, draw_split

MISSING_POLICIES = ("drop_rows", "indicators")
NORMALIZATIONS = ("none", "site_train")
STD_EPSILON = 1e-9  # FLamby divides by (std + 1e-9)


class TableReader:
    """The `tabular` modality's reader: rows are already feature vectors, a batch stacks them."""

    def collate(self, items: list[Tensor]) -> Tensor:
        return torch.stack(items)


def feature_names(table: Mapping[str, Any]) -> list[str]:
    """The encoded feature vector's columns: numeric, then one-hot (`col=level`), then missing indicators."""
    names = list(table.get("numeric") or [])
    drop_first = bool(table.get("drop_first", False))
    for column, levels in (table.get("categorical") or {}).items():
        kept = list(levels)[1:] if drop_first else list(levels)
        names += [f"{column}={level}" for level in kept]
    if table.get("missing", "drop_rows") == "indicators":
        names += [f"{column}:missing" for column in _input_columns(table)]
    return names


def read_table_site(
    path: str | Path, table: Mapping[str, Any], site: str | None = None, quality: dict | None = None
) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Read one file (or one site's rows of it) -> (features [N, F] frame, raw labels [N], patient ids [N]).

    A `quality` dict, when given, receives the read's aggregates (modalities/quality.py):
    `fields` (rows read, dropped, missing share per column), `duplicates` and `repairs`.
    """
    path = Path(path)
    frame = _read_frame(path, table)
    first_line = 2 if table.get("header", True) else 1
    frame.insert(0, "__row__", [f"row {i + first_line}" for i in range(len(frame))])
    site_column = table.get("site_column")
    if site_column:
        _require_columns(path, frame, [site_column])
        frame = frame[frame[site_column].str.strip() == str(site)]
    frame = frame.drop(columns=[c for c in table.get("drop_columns") or [] if c in frame.columns])
    label_column = table["label"]["column"]
    id_column = table.get("id_column")
    _require_columns(path, frame, [label_column, *_input_columns(table), *([id_column] if id_column else [])])

    markers = {str(m).strip() for m in table.get("missing_values") or []} | {""}
    used = [label_column, *_input_columns(table)]
    missing = frame[used].apply(lambda col: col.str.strip().isin(markers))
    policy = table.get("missing", "drop_rows")
    if policy not in MISSING_POLICIES:
        raise ValueError(f"table.missing must be one of {MISSING_POLICIES}, got {policy!r}")
    if policy == "drop_rows":
        keep = ~missing.any(axis=1)
    else:
        unlabelled = missing[label_column]
        if unlabelled.any():
            raise DataError(path, "missing label", record=frame["__row__"][unlabelled].iloc[0], field=label_column)
        keep = pd.Series(True, index=frame.index)
    stats = ReadStats()
    if quality is not None:
        fields, duplicates = table_read_quality(missing, keep, frame[used].apply(lambda col: col.str.strip()))
        if id_column:
            duplicates["repeated_ids"] = repeats(frame[id_column].str.strip().tolist())
        quality.update(fields=fields, duplicates=duplicates, repairs=stats)
    frame, missing = frame[keep], missing[keep]
    if frame.empty:
        raise DataError(path, f"site {site or path.stem!r} has no rows" + (" left after dropping rows with missing values" if policy == "drop_rows" else ""),
                        field=site_column)

    features = _encode(path, frame, missing, table, stats)
    labels = _labels(path, frame, table["label"], stats)
    ids = (frame[id_column].str.strip() if id_column else frame["__row__"]).tolist()
    return features, labels, ids


def load_table_sites(cfg: DictConfig, seed: int) -> Consortium:
    """The consortium loader for tables (`data.loader: modalities.tables.load_table_sites`)."""
    table = OmegaConf.to_container(cfg.table, resolve=True)
    names = feature_names(table)
    declared = cfg.get("n_features")
    if declared is not None and int(declared) != len(names):
        raise ValueError(f"data.n_features is {declared} but the table config encodes {len(names)} features: {names}")
    entries = _site_entries(cfg, table)
    reads = {entry["name"]: {} for entry in entries}  # per site: the read's quality aggregates
    read = [(entry["name"], Path(entry["path"]), *read_table_site(entry["path"], table, entry.get("site"), reads[entry["name"]])) for entry in entries]
    found = sorted({str(label) for *_, labels, _ in read for label in labels})
    label_space = LabelSpace(cfg.get("labels") or found)
    split_cfg = OmegaConf.to_container(cfg.split, resolve=True) if cfg.get("split") else {}
    sites, quality, min_count = [], {}, min_count_from(cfg)
    for name, path, features, labels, ids in read:
        targets = [_label_index(path, label_space, label, pid) for label, pid in zip(labels, ids)]
        parts = split_rows(targets, ids, split_cfg, seed)
        values = torch.tensor(normalise(features.to_numpy(np.float32), parts["train"], table.get("normalize", "none")))
        items = [
            {"patient_id": f"{name}/{pid}", "label": target, "inputs": {Modality.TABULAR.value: values[i]}, "meta": {"site": name}}
            for i, (pid, target) in enumerate(zip(ids, targets))
        ]
        splits = {split: SiteDataset([items[i] for i in parts[split]], [Modality.TABULAR.value]) for split in SPLITS}
        sites.append(SiteData(name=name, modalities=(Modality.TABULAR.value,), splits=splits))
        quality[name] = collection_quality(splits, Modality.TABULAR.value, label_space.labels, min_count, **reads[name])
    return Consortium(sites, label_space, [Modality.TABULAR.value], {Modality.TABULAR.value: TableReader()}, quality)


def split_rows(targets: Sequence[int], ids: Sequence[str], split: Mapping[str, Any], seed: int) -> dict[str, list[int]]:
    """Row indices per split (train/val/test).

    `method: train_test_split` is scikit-learn's (FLamby's): `train_fraction`,
    `random_state`, stratified by label when every label has more than 2 rows
    (FLamby's rule); no val rows unless `val_fraction` carves them from the training
    rows (seeded, stratified the same way). `method: draw` is the project's seeded,
    label-stratified draw with `fractions`.
    """
    method = split.get("method", "draw")
    if method == "train_test_split":
        from sklearn.model_selection import train_test_split

        fraction = float(split.get("train_fraction", 0.66))
        counts = np.bincount(np.asarray(targets))
        present = counts[counts > 0]
        stratify = np.asarray(targets) if split.get("stratify", True) and len(present) > 1 and (present > 2).all() else None
        train, test = train_test_split(np.arange(len(targets)), train_size=fraction, test_size=1.0 - fraction,
                                       random_state=split.get("random_state"), shuffle=True, stratify=stratify)
        test_set = set(test.tolist())
        train = [i for i in range(len(targets)) if i not in test_set]
        train, val = _carve_validation(train, targets, float(split.get("val_fraction", 0.0)), split.get("random_state"), split.get("val_fold"))
        return {"train": train, "val": val, "test": sorted(test_set)}
    if method == "draw":
        records = [SimpleNamespace(patient_id=str(i), label=str(t)) for i, t in enumerate(targets)]
        drawn = draw_split(records, seed, split.get("fractions") or {"train": 0.6, "val": 0.2, "test": 0.2})
        return {name: [int(i) for i in drawn[name]] for name in SPLITS}
    raise ValueError(f"split.method must be train_test_split or draw, got {method!r}")


def _carve_validation(train: list[int], targets: Sequence[int], fraction: float, random_state, fold: int | None = None) -> tuple[list[int], list[int]]:
    """A validation split from the training rows, for protocols that have none (FLamby's heart split).

    `fold` (split.val_fold) takes fold `fold` of round(1 / fraction) seeded, stratified folds instead of one
    draw, so that the folds' validation splits together cover every training row once (cross-fitted selection).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split.val_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or len(train) < 2:
        return train, []
    from sklearn.model_selection import train_test_split

    labels = np.asarray(targets)[train]
    counts = np.bincount(labels)
    present = counts[counts > 0]
    stratify = labels if len(present) > 1 and (present > 2).all() else None
    if fold is not None:
        return _fold(np.asarray(train), labels, stratify is not None, round(1 / fraction), int(fold), random_state)
    kept, val = train_test_split(np.asarray(train), test_size=fraction, random_state=random_state, shuffle=True, stratify=stratify)
    return sorted(kept.tolist()), sorted(val.tolist())


def _fold(train: np.ndarray, labels: np.ndarray, stratified: bool, n_folds: int, fold: int, random_state) -> tuple[list[int], list[int]]:
    """(kept, val): fold `fold` of `n_folds` shuffled folds of the training rows, stratified by label when it can be."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if not 0 <= fold < n_folds:
        raise ValueError(f"split.val_fold must be in [0, {n_folds}) for val_fraction {1 / n_folds:g}, got {fold}")
    n_folds = min(n_folds, len(train))
    if stratified and np.bincount(labels)[np.bincount(labels) > 0].min() >= n_folds:
        folds = StratifiedKFold(n_folds, shuffle=True, random_state=random_state).split(train, labels)
    else:
        folds = KFold(n_folds, shuffle=True, random_state=random_state).split(train)
    kept, val = list(folds)[min(fold, n_folds - 1)]
    return sorted(train[kept].tolist()), sorted(train[val].tolist())


def normalise(values: np.ndarray, train_rows: Sequence[int], how: str) -> np.ndarray:
    """`site_train`: z-score every column with the site's training rows' mean and sd (ddof 1), as FLamby does."""
    if how not in NORMALIZATIONS:
        raise ValueError(f"table.normalize must be one of {NORMALIZATIONS}, got {how!r}")
    if how == "none" or not len(train_rows):
        return values
    train = values[list(train_rows)].astype(np.float64)
    mean = train.mean(axis=0)
    std = train.std(axis=0, ddof=1) if len(train_rows) > 1 else np.zeros_like(mean)
    return ((values - mean) / (std + STD_EPSILON)).astype(np.float32)


def _site_entries(cfg: DictConfig, table: Mapping[str, Any]) -> list[dict]:
    root = Path(cfg.root) if cfg.get("root") else Path(".")
    if table.get("site_column"):
        path = regular_file(root / cfg.path)
        names = [str(s) for s in cfg.sites] if cfg.get("sites") else sorted(_read_frame(path, table)[table["site_column"]].str.strip().unique())
        return [{"name": name, "path": path, "site": name} for name in names]
    if not cfg.get("sites"):
        raise ValueError("data.sites must list {name, path} per site, or set data.table.site_column and data.path")
    return [{"name": str(s.name), "path": root / s.path} for s in cfg.sites]


def _read_frame(path: Path, table: Mapping[str, Any]) -> pd.DataFrame:
    regular_file(path)  # "file not found", or a named pipe refused before it blocks the read
    sep = table.get("sep") or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    header = table.get("header", True)
    try:
        frame = pd.read_csv(path, sep=sep, header=0 if header else None, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot parse table: {err}") from err
    columns = table.get("columns")
    if columns:
        if len(columns) != frame.shape[1]:
            raise DataError(path, f"{frame.shape[1]} columns, but table.columns names {len(columns)}")
        frame.columns = list(columns)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _input_columns(table: Mapping[str, Any]) -> list[str]:
    return list(table.get("numeric") or []) + list((table.get("categorical") or {}).keys())


def _require_columns(path: Path, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    for column in columns:
        if column not in frame.columns:
            raise DataError(path, f"no column {column!r} (columns: {', '.join(c for c in frame.columns if c != '__row__')})", field=column)


def _encode(path: Path, frame: pd.DataFrame, missing: pd.DataFrame, table: Mapping[str, Any], stats: ReadStats | None = None) -> pd.DataFrame:
    stats = ReadStats() if stats is None else stats
    encoded: dict[str, list[float]] = {}
    for column in table.get("numeric") or []:
        encoded[column] = [0.0 if gap else _number(path, raw, row, column) for raw, gap, row in zip(frame[column], missing[column], frame["__row__"])]
    drop_first = bool(table.get("drop_first", False))
    for column, levels in (table.get("categorical") or {}).items():
        levels = list(levels)
        index = [None if gap else _level(path, raw, levels, row, column) for raw, gap, row in zip(frame[column], missing[column], frame["__row__"])]
        renamed = sum(i is not None and raw.strip() != str(levels[i]) for raw, i in zip(frame[column], index))  # e.g. '2.0' read as level 2
        if renamed:
            stats.add("category_level_renamed", column, renamed)
        for j, level in enumerate(levels[1:] if drop_first else levels, start=1 if drop_first else 0):
            encoded[f"{column}={level}"] = [float(i == j) for i in index]
    if table.get("missing", "drop_rows") == "indicators":
        for column in _input_columns(table):
            encoded[f"{column}:missing"] = missing[column].astype(float).tolist()
            if missing[column].any():
                stats.add("missing_indicator_set", column, int(missing[column].sum()))
    return pd.DataFrame(encoded, index=frame.index)[feature_names(table)]


def _number(path: Path, raw: str, row: str, column: str) -> float:
    return parse_number(raw, set(), path, row, column)


def _level(path: Path, raw: str, levels: list, row: str, column: str) -> int:
    """Index of a categorical value among the configured levels (1 and '1.0' are the same level)."""
    text = raw.strip()
    for i, level in enumerate(levels):
        if text == str(level) or _same_number(text, level):
            return i
    raise DataError(path, f"the value is not one of the configured levels {levels}", record=row, field=column)  # never quote a patient's cell


def _same_number(text: str, level: Any) -> bool:
    try:
        return float(text) == float(level)
    except (TypeError, ValueError):
        return False


def _labels(path: Path, frame: pd.DataFrame, label: Mapping[str, Any], stats: ReadStats | None = None) -> np.ndarray:
    """Raw label strings; `above: t` binarises a numeric label to '1' (value > t) or '0'; `mapping` renames values."""
    column = label["column"]
    values = frame[column].str.strip()
    if label.get("above") is not None:
        numbers = [_number(path, raw, row, column) for raw, row in zip(values, frame["__row__"])]
        if stats is not None:
            stats.add("label_binarised", n=len(numbers))  # no per-label detail: that would bypass the histogram's suppression
        return np.array(["1" if n > float(label["above"]) else "0" for n in numbers])
    mapping = {str(k): str(v) for k, v in (label.get("mapping") or {}).items()}
    if mapping:
        unknown = ~values.isin(list(mapping))
        if unknown.any():
            raise DataError(path, f"label {values[unknown].iloc[0]!r} is not in label.mapping", record=frame["__row__"][unknown].iloc[0], field=column)
        if stats is not None:
            stats.add("label_mapped", n=int((values != values.map(mapping)).sum()))
        values = values.map(mapping)
    return values.to_numpy(dtype=str)


def _label_index(path: Path, label_space: LabelSpace, label: str, patient_id: str) -> int:
    if label not in label_space:
        raise DataError(path, f"label {label!r} is not in the label space {list(label_space.labels)}", record=patient_id)
    return label_space.index(label)
