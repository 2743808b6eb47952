"""Train/val/test split of a site's patients: the site's own `split.csv`, or a seeded stratified draw.

The draw is stratified by label because rare-disease cohorts have many labels with
a handful of patients each; every label with at least two patients keeps one in
training. Each label is shuffled with its own seed (run seed + label), so adding a
patient with one label does not reshuffle the others.
"""
from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from modalities.base import DataError, optional_file
from modalities.phenopacket_io import PatientRecord

SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.6, "val": 0.2, "test": 0.2}
SPLIT_FILE = "split.csv"


def load_or_draw_split(
    site_dir: str | Path,
    records: Sequence[PatientRecord],
    seed: int,
    fractions: Mapping[str, float] | None = None,
) -> dict[str, list[str]]:
    """Patient ids per split (keys train/val/test, in the order of `records`)."""
    path = Path(site_dir) / SPLIT_FILE
    if optional_file(path) is not None:  # a named pipe is refused, not taken for no split file
        return read_split(path, records)
    return draw_split(records, seed, fractions or DEFAULT_FRACTIONS)


def read_split(path: Path, records: Sequence[PatientRecord]) -> dict[str, list[str]]:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot parse CSV: {err}") from err
    table.columns = [str(c).strip() for c in table.columns]
    for column in ("patient_id", "split"):
        if column not in table.columns:
            raise DataError(path, f"missing column {column!r}", field=column)
    known = {r.patient_id for r in records}
    assigned: dict[str, str] = {}
    for offset, (patient_id, split) in enumerate(zip(table["patient_id"].str.strip(), table["split"].str.strip())):
        row = f"row {offset + 2} ({patient_id})"
        if patient_id not in known:
            raise DataError(path, f"patient {patient_id!r} has no phenopacket", record=row, field="patient_id")
        if split not in SPLITS:
            raise DataError(path, f"split {split!r} is not one of {', '.join(SPLITS)}", record=row, field="split")
        if patient_id in assigned:
            raise DataError(path, f"patient {patient_id!r} is listed twice", record=row, field="patient_id")
        assigned[patient_id] = split
    missing = [r.patient_id for r in records if r.patient_id not in assigned]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataError(path, f"{len(missing)} patients have no split: {shown}", record=missing[0], field="patient_id")
    return {split: [r.patient_id for r in records if assigned[r.patient_id] == split] for split in SPLITS}


def draw_split(records: Sequence[PatientRecord], seed: int, fractions: Mapping[str, float]) -> dict[str, list[str]]:
    shares = _check_fractions(fractions)
    by_label: dict[str, list[str]] = defaultdict(list)
    for record in records:
        by_label[str(record.label)].append(record.patient_id)
    chosen: dict[str, str] = {}
    for label, patient_ids in by_label.items():
        rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
        order = [patient_ids[i] for i in rng.permutation(len(patient_ids))]
        counts = split_counts(len(order), shares)
        start = 0
        for split, count in zip(SPLITS, counts):
            chosen.update((pid, split) for pid in order[start : start + count])
            start += count
    return {split: [r.patient_id for r in records if chosen[r.patient_id] == split] for split in SPLITS}


def split_counts(n: int, shares: Sequence[float]) -> list[int]:
    """Largest-remainder rounding of n * shares (in SPLITS order), with >= 1 training patient when n >= 2."""
    quotas = [n * s for s in shares]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    if n >= 2 and counts[0] == 0:
        donor = max((1, 2), key=lambda i: counts[i])
        counts[donor] -= 1
        counts[0] += 1
    return counts


def _check_fractions(fractions: Mapping[str, float]) -> list[float]:
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names in fractions: {sorted(unknown)}")
    shares = [float(fractions.get(s, 0.0)) for s in SPLITS]
    if any(s < 0 for s in shares) or not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}")
    return shares
