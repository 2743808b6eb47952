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

Labels follow ClinVar's convention by default (`data.label_policy: clinvar`): a
composite significance such as `Benign/Likely_benign,_risk_factor` is read by its
primary significance, the part before the first comma (or `|`, `;`); a primary made of
mapped parts with one label (`Pathogenic/Likely_pathogenic/Pathogenic`) takes that
label; rows whose primary significance is not a class (uncertain, conflicting, not
provided, risk factor, drug response, ...) are excluded. Both are counted in
quality.json under `all_sites.repairs.tabular`. Any other unmapped value is a
DataError, as it always is with `label_policy: strict` (`data.label_mapping` only).

The same variant (chrom:pos:ref>alt) at several labs, or with conflicting labels,
is counted under `all_sites.duplicates`, and a copy in a lab's val or test rows
whose variant is in some lab's training rows is left out of evaluation
(modalities/duplicates.py).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from modalities.base import DataError, Modality, check_option, parse_number, regular_file
from modalities.consortium import Consortium
from modalities.dataset import SiteDataset
from modalities.duplicates import separate_duplicates
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
LABEL_POLICIES = ("clinvar", "strict")
# ClinVar significances that are not a benign/pathogenic class: rows whose primary significance is one are excluded.
CLINVAR_NOT_A_CLASS = frozenset({
    "uncertain_significance", "conflicting_interpretations_of_pathogenicity", "conflicting_classifications_of_pathogenicity",
    "conflicting_data_from_submitters", "not_provided", "no_classification_provided", "no_interpretation_for_the_single_variant",
    "no_classifications_from_unflagged_records", "other", "drug_response", "risk_factor", "association", "association_not_found",
    "protective", "affects", "confers_sensitivity", "established_risk_allele", "likely_risk_allele", "uncertain_risk_allele",
})


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
    counts: ReadStats = field(default_factory=ReadStats)  # labels read by their primary significance, rows excluded

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
    label_policy: str = "clinvar",
) -> VariantRows:
    """Read and validate a table: every configured column present, every number a number, every label mapped.

    Rows whose ClinVar significance is not a class are left out (`label_policy: clinvar`) and counted.
    """
    check_option("data.label_policy", label_policy, LABEL_POLICIES)
    path = Path(path)
    frame = _read_frame(path, sep, rename)
    roles = {role: column for role, column in columns.items() if column}
    for role in required:
        if role not in roles:
            raise ValueError(f"data.columns.{role} is not set, but reading {path} needs it")
    _require(path, frame, list(roles.values()) + [s.column for s in specs])
    records = [f"row {i + 2}" for i in range(len(frame))]  # line number in the file (the header is line 1)
    counts = ReadStats()
    labels = None
    if "label" in roles:
        labels = _labels(path, frame[roles["label"]], records, label_mapping, roles["label"], label_policy, counts)
        keep = [label is not None for label in labels]
        frame = frame[keep].reset_index(drop=True)
        records = [r for r, k in zip(records, keep) if k]
        labels = [label for label in labels if label is not None]
    markers = {str(m).strip() for m in missing_values} | {""}
    raw = np.array(
        [[parse_number(v, markers, path, r, s.column) for v, r in zip(frame[s.column], records)] for s in specs], dtype=np.float64
    ).T.reshape(len(frame), len(specs))
    values = {role: frame[column].str.strip().tolist() for role, column in roles.items() if role != "label"}
    has_locus = all(role in values for role in LOCUS_ROLES)
    keys = [f"{c}:{p}:{r}>{a}" for c, p, r, a in zip(*(values[k] for k in LOCUS_ROLES))] if has_locus else list(records)
    return VariantRows(path, records, keys, values, raw, labels, counts)


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
        label_policy=str(cfg.get("label_policy") or "clinvar"),
    )
    labs, names = assign_labs(rows.role("gene"), rows.role("chrom"), rows.role("lab"), cfg.labs, seed)
    split = holdout_split(rows.role("gene"), labs, cfg.get("holdout") or {}, seed)
    transformed = check_and_transform(rows.raw, specs, rows.path, rows.records)
    train_of = {lab: [i for i, (owner, s) in enumerate(zip(labs, split)) if owner == lab and s == "train"] for lab in names}
    empty = [lab for lab, train in train_of.items() if not train]
    if empty:
        raise DataError(rows.path, f"labs {empty} have no training rows: fewer labs, other shares or a smaller holdout")
    encoding = VariantEncoding.fit([transformed[train_of[lab]] for lab in names], specs)
    values = torch.from_numpy(encoding.encode(transformed))
    targets = _targets(rows, label_space)
    sites, quality, min_count = [], {}, min_count_from(cfg)
    for lab in names:
        members = [i for i, owner in enumerate(labs) if owner == lab]
        splits = {
            name: SiteDataset([_item(lab, i, rows, values, targets) for i in members if split[i] == name], [TABULAR]) for name in SPLITS
        }
        sites.append(SiteData(name=lab, modalities=(TABULAR,), splits=splits))
        quality[lab] = collection_quality(splits, TABULAR, label_space.labels, min_count, **_lab_quality(rows, specs, members))
    index = {record: i for i, record in enumerate(rows.records)}
    sites, duplicates = separate_duplicates(sites, lambda lab, item: variant_key(rows, index[item["meta"]["record"]]))
    across = {"repairs": {TABULAR: rows.counts.as_dict()} if rows.counts else {}, "duplicates": duplicates}
    if any(across.values()):
        quality["all_sites"] = {k: v for k, v in across.items() if v}
    return Consortium(sites, label_space, [TABULAR], {TABULAR: VariantFeatureReader(encoding)}, quality)


def variant_key(rows: VariantRows, i: int) -> str | None:
    """chrom:pos:ref>alt as one content key ('chr1' is '1', bases in capitals); None when the table names no locus."""
    if not all(role in rows.columns for role in LOCUS_ROLES):
        return None
    chrom, pos, ref, alt = (rows.columns[role][i] for role in LOCUS_ROLES)
    return f"{re.sub(r'(?i)^chr', '', chrom)}:{pos}:{ref.upper()}>{alt.upper()}"


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
    regular_file(path)  # "file not found", or a named pipe refused before it blocks the read
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


def _labels(
    path: Path, values: pd.Series, records: list[str], mapping: Mapping[str, str] | None, column: str, policy: str, counts: ReadStats
) -> list[str | None]:
    """Labels through `data.label_mapping` (e.g. Likely_pathogenic -> pathogenic); None for a row ClinVar's convention excludes.

    A value neither mapped nor (with `clinvar`) read by its primary significance is a DataError.
    """
    out: list[str | None] = []
    for raw, record in zip(values.str.strip(), records):
        label = mapping.get(raw) if mapping else raw
        if label is None and raw and mapping and policy == "clinvar":
            label, primary = _clinvar_label(raw, mapping)
            if label is not None:
                counts.add("label_from_primary_significance", f"{raw} -> {primary}")
            elif primary is not None:
                counts.add("rows_excluded_not_a_class", primary)
                out.append(None)
                continue
        if label is None or raw == "":
            raise DataError(path, f"label {raw!r} is not in data.label_mapping ({', '.join(mapping or {})})", record=record, field=column)
        out.append(str(label))
    return out


def _clinvar_label(raw: str, mapping: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(label, primary significance) of a composite ClinVar value; (None, primary) to exclude the row; (None, None) if unknown."""
    primary = re.split(r"[,|;]", raw, maxsplit=1)[0].strip(" _")

    def mapped(term: str) -> str | None:  # ClinVar writes Likely_benign in its VCF and 'Likely benign' in its tables
        return mapping.get(term, mapping.get(term.replace(" ", "_")))

    parts = [p.strip(" _") for p in primary.split("/")]
    labels = {mapped(primary)} if mapped(primary) is not None else {mapped(p) for p in parts}
    if None not in labels and len(labels) == 1:
        return str(labels.pop()), primary
    if any(p.lower().replace(" ", "_") in CLINVAR_NOT_A_CLASS for p in parts):
        return None, primary
    return None, None
