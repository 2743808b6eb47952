"""A per-site data-quality report, computed at the site and shared only as aggregates.

The report says how complete a site's data is (patients per split, the share of
patients missing each modality, per lab analyte and per variant score), how its
labels are distributed (counts under `min_count` are shown as "<k", so a rare
diagnosis at a small site does not single out a patient), which conversions and
repairs the readers made (alternative and obsolete HPO ids mapped, units
converted, RGB images made grey, duplicate lab rows averaged, unknown terms
dropped), and duplicated content (identical phenopackets under two ids, identical
notes). It holds no patient ids and no raw values: counts, shares and the names of
fields, units and ontology ids only.

`site_quality` reports a site folder; the loaders that cut one collection into
sites (tables, image archives and folders) build the same shape of report with
`collection_quality`, from the pieces below (`table_read_quality`,
`image_quality`, `repeats`, `content_hash`). `min_count_from(cfg)` reads
`data.quality.min_count` (default 5).
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_MIN_COUNT = 5


class ReadStats(Counter):
    """A reader's counts by kind, each with an optional breakdown (e.g. 'HP:0000057 -> HP:0008665', 'mg/dL -> mmol/L').

    It is a Counter, so `stats["alt_ids_mapped"]` reads a total; `add` also records the detail.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.details: dict[str, Counter] = defaultdict(Counter)

    def add(self, kind: str, detail: str | None = None, n: int = 1) -> None:
        self[kind] += n
        if detail is not None:
            self.details[kind][detail] += n

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """{kind: {"count": n, "details": {detail: n}}} for kinds with a non-zero count, sorted by kind."""
        out = {}
        for kind in sorted(self):
            if self[kind]:
                entry: dict[str, Any] = {"count": int(self[kind])}
                if self.details.get(kind):
                    entry["details"] = dict(sorted(self.details[kind].items()))
                out[kind] = entry
        return out


def suppress_small(counts: Mapping[str, int], min_count: int) -> dict[str, int | str]:
    """Counts below `min_count` (but above 0) become the string "<min_count".

    When exactly one cell is hidden, the total would reveal it (total minus the
    others), so the smallest shown non-zero cell is hidden too (secondary suppression).
    """
    hidden = {key for key, n in counts.items() if 0 < n < min_count}
    if len(hidden) == 1:
        shown = [(n, key) for key, n in counts.items() if key not in hidden and n > 0]
        if shown:
            hidden.add(min(shown)[1])
    return {key: (f"<{min_count}" if key in hidden and counts[key] < min_count else "suppressed" if key in hidden else n) for key, n in counts.items()}


def site_quality(
    site_dir: str | Path,
    splits: Mapping[str, Any],
    modalities: Sequence[str],
    readers: Mapping[str, Any],
    labels: Sequence[str],
    min_count: int = DEFAULT_MIN_COUNT,
    phenopacket_dir: str = "phenopackets",
    phenopacket_stats: ReadStats | None = None,
) -> dict[str, Any]:
    """The report for one site, right after `load_site` (the readers' `stats` still hold this site's counts).

    `phenopacket_stats`: the repairs `load_site` counted while reading the phenopackets (under `repairs.phenopackets`).
    """
    site_dir = Path(site_dir)
    items = [item for split in splits.values() for item in split.items]
    n = len(items)
    report: dict[str, Any] = {
        "n_patients": n,
        "splits": {name: len(split) for name, split in splits.items()},
        "min_count": int(min_count),
        "labels": suppress_small(dict(sorted(Counter(labels[item["label"]] for item in items).items())), min_count),
        "missing": {m: _share(sum(m not in item["inputs"] for item in items), n) for m in modalities},
        "fields": {},
        "repairs": {},
        "duplicates": _duplicates(site_dir, phenopacket_dir, readers.get("notes")),
    }
    if phenopacket_stats:
        report["repairs"]["phenopackets"] = phenopacket_stats.as_dict()
    for modality in modalities:
        reader = readers.get(modality)
        stats = getattr(reader, "stats", None)
        if isinstance(stats, ReadStats):
            report["repairs"][modality] = stats.as_dict()
        elif stats:
            report["repairs"][modality] = {k: {"count": int(v)} for k, v in sorted(stats.items()) if v}
        fields = _field_missingness(modality, reader, [item["inputs"][modality] for item in items if modality in item["inputs"]])
        if fields:
            report["fields"][modality] = fields
    return report


def _share(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


def _field_missingness(modality: str, reader: Any, tensors: list) -> dict[str, Any]:
    """Per lab analyte: share of the patients with labs who lack it; per variant score: share of variant rows without it."""
    if not tensors:
        return {}
    if modality == "labs" and hasattr(reader, "analyte_names"):
        names = reader.analyte_names
        missing = sum(t[len(names) :].float() for t in tensors)
        return {name: _share(int(missing[i]), len(tensors)) for i, name in enumerate(names)}
    if modality == "variants" and hasattr(reader, "columns"):
        columns = list(reader.columns)
        rows = [row for t in tensors for row in t.tolist()]
        out: dict[str, Any] = {"n_variant_rows": len(rows)}
        for j, column in enumerate(columns):
            if column.endswith("_missing"):
                out[column[: -len("_missing")]] = _share(sum(r[j] > 0.5 for r in rows), len(rows))
        gene = columns.index("gene")
        out["gene"] = _share(sum(r[gene] == 0 for r in rows), len(rows))  # not in the gene vocabulary
        return out
    return {}


def _duplicates(site_dir: Path, phenopacket_dir: str, notes_reader: Any) -> dict[str, int]:
    """Files whose content repeats another's (phenopackets compared without their ids)."""
    out = {"phenopackets_same_content": phenopacket_duplicates(sorted((site_dir / phenopacket_dir).rglob("*.json")))}
    if notes_reader is not None and (site_dir / notes_reader.dir).is_dir():
        paths = [p for p in sorted((site_dir / notes_reader.dir).glob("*.txt")) if p.is_file()]  # a named pipe would block
        notes = (b" ".join(p.read_bytes().split()) for p in paths)
        texts = [hashlib.sha256(text).hexdigest() for text in notes if text]
        out["identical_notes"] = _repeats(texts)
    return out


def phenopacket_duplicates(paths: Iterable[Path]) -> int:
    """Phenopackets whose content repeats another's, compared without their ids and metadata."""
    return _repeats([h for h in map(phenopacket_hash, paths) if h is not None])


def phenopacket_hash(path: Path) -> str | None:
    """sha256 of a phenopacket's content without its ids and metadata (None when it is not a readable JSON object)."""
    identity = phenopacket_identity(path)
    return identity[1] if identity else None


def phenopacket_identity(path: Path) -> tuple[str, str] | None:
    """(patient id, content hash) of a phenopacket file; None when it is not a readable JSON object."""
    if not Path(path).is_file():  # a named pipe would block; the readers refuse it by name
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    patient_id = str(data.get("id", "")).strip()
    data = {k: v for k, v in data.items() if k not in ("id", "metaData")}
    if isinstance(data.get("subject"), dict):
        data["subject"] = {k: v for k, v in data["subject"].items() if k != "id"}
    return patient_id, hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _repeats(hashes: list[str]) -> int:
    return sum(c - 1 for c in Counter(hashes).values() if c > 1)


# ---------------------------------------------------------------- collections cut into sites


def min_count_from(cfg: Any) -> int:
    """k for the label histograms: `data.quality.min_count`, default 5."""
    quality = cfg.get("quality") if cfg is not None else None
    return int((quality or {}).get("min_count", DEFAULT_MIN_COUNT))


def label_histogram(splits: Mapping[str, Any], labels: Sequence[str], min_count: int) -> dict[str, int | str]:
    """Patients per label over all splits, small counts suppressed."""
    counts = Counter(labels[item["label"]] for split in splits.values() for item in split.items)
    return suppress_small(dict(sorted(counts.items())), min_count)


def collection_quality(
    splits: Mapping[str, Any],
    modality: str,
    labels: Sequence[str],
    min_count: int = DEFAULT_MIN_COUNT,
    fields: Mapping[str, Any] | None = None,
    repairs: ReadStats | None = None,
    duplicates: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """`site_quality`'s report for a one-modality site cut from a collection (every patient has the modality)."""
    n = sum(len(split) for split in splits.values())
    return {
        "n_patients": n,
        "splits": {name: len(split) for name, split in splits.items()},
        "min_count": int(min_count),
        "labels": label_histogram(splits, labels, min_count),
        "missing": {modality: _share(0, n)},
        "fields": {modality: dict(fields)} if fields else {},
        "repairs": {modality: repairs.as_dict()} if repairs is not None else {},
        "duplicates": dict(duplicates or {}),
    }


def content_hash(*parts: Any) -> str:
    """sha256 over bytes, strings or arrays (an array's shape and dtype count too); only compared, never reported."""
    digest = hashlib.sha256()
    for part in parts:
        if hasattr(part, "tobytes"):
            digest.update(f"{getattr(part, 'shape', '')}{getattr(part, 'dtype', '')}".encode())
            part = part.tobytes()
        digest.update(part if isinstance(part, bytes) else str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def repeats(hashes: Sequence[str]) -> int:
    """How many items repeat an earlier one (3 copies of one thing: 2)."""
    return _repeats(list(hashes))


def repeats_across(hashes: Sequence[str], groups: Sequence[str]) -> int:
    """Distinct contents found in more than one group (e.g. an image in both train and test)."""
    seen: dict[str, set] = defaultdict(set)
    for h, g in zip(hashes, groups):
        seen[h].add(g)
    return sum(len(g) > 1 for g in seen.values())


def table_read_quality(missing: Any, keep: Any, values: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """One table site's read: (fields, duplicates) from its `missing` mask, kept-row mask and used columns.

    `missing` and `values` are frames over the rows read (label and input columns), `keep`
    the rows kept. Shares are of the rows read; dropped rows are counted per column
    (a row missing two values counts under both).
    """
    missing, keep = missing.astype(bool), keep.astype(bool)  # an empty frame's masks come back as objects
    n = len(missing)
    dropped = missing[~keep]
    fields = {
        "rows_read": int(n),
        "rows_kept": int(keep.sum()),
        "rows_dropped_missing": int((~keep).sum()),
        "rows_dropped_by_column": {c: int(dropped[c].sum()) for c in dropped.columns if dropped[c].any()},
        "missing_share": {c: _share(int(missing[c].sum()), n) for c in missing.columns},
    }
    rows = [content_hash(*row) for row in values.itertuples(index=False, name=None)]
    return fields, {"duplicate_rows": repeats(rows)}


def image_quality(hashes: Sequence[str], splits: Sequence[str], kind: str = "identical_pixels") -> dict[str, int]:
    """Duplicated images at a site: copies in all (`kind`) and contents shared across splits."""
    return {kind: repeats(hashes), f"{kind}_across_splits": repeats_across(hashes, splits)}
