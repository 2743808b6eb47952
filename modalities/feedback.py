"""Clinician feedback: cases the model got wrong, confirmed by a clinician, kept at the site.

A site's `feedback.jsonl` holds one JSON object per line: `case_id` (a patient with
a phenopacket at this site), `model_answer` and `confirmed_diagnosis` (labels of the
consortium's label space), and an optional `comment` and `recorded_at`. The file
never leaves the site. When the site is loaded, each feedback case moves into the
validation split with its confirmed diagnosis as the label, so the next rounds are
judged on exactly the cases clinicians found hard (and the case no longer trains
the model it now validates). Items carry `meta["feedback"] = True`, so the run can
count them without reading the file.
"""
from __future__ import annotations

import json
from collections.abc import Container, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalities.base import DataError, optional_file

FEEDBACK_FILE = "feedback.jsonl"
REQUIRED = ("case_id", "model_answer", "confirmed_diagnosis")
OPTIONAL = ("comment", "recorded_at")
VALIDATION = "val"


@dataclass(frozen=True)
class Feedback:
    case_id: str
    model_answer: str
    confirmed_diagnosis: str
    comment: str = ""
    recorded_at: str = ""


def parse_feedback_line(path: Path, number: int, line: str, cases: Container[str], labels: Container[str]) -> Feedback:
    """One line, checked: a DataError names the file, the line and the field."""
    where = f"line {number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(path, f"invalid JSON ({err.msg})", record=where) from err
    if not isinstance(data, dict):
        raise DataError(path, "a feedback entry must be a JSON object", record=where)
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise DataError(path, f"unknown field (known: {', '.join(REQUIRED + OPTIONAL)})", record=where, field=unknown[0])
    for name in REQUIRED:
        if not isinstance(data.get(name), str) or not data[name].strip():
            raise DataError(path, "missing or empty", record=where, field=name)
    if data["case_id"] not in cases:
        raise DataError(path, f"case {data['case_id']!r} has no phenopacket at this site", record=where, field="case_id")
    for name in ("model_answer", "confirmed_diagnosis"):
        if data[name] not in labels:
            raise DataError(path, f"{data[name]!r} is not in the consortium's label space", record=where, field=name)
    return Feedback(**{k: str(data.get(k, "")) for k in REQUIRED + OPTIONAL})


def read_feedback(path: str | Path, cases: Container[str], labels: Container[str]) -> list[Feedback]:
    """Every entry of a feedback file (none if it does not exist); one case may be reported once."""
    path = Path(path)
    if optional_file(path) is None:
        return []
    entries: list[Feedback] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        entry = parse_feedback_line(path, number, line, cases, labels)
        if entry.case_id in first_line:
            raise DataError(path, f"case {entry.case_id!r} already has feedback at line {first_line[entry.case_id]}", record=f"line {number}", field="case_id")
        first_line[entry.case_id] = number
        entries.append(entry)
    return entries


def join_feedback(site_dir: str | Path, items: MutableMapping[str, dict[str, Any]], split: dict[str, list[str]], label_space: Any) -> dict[str, list[str]]:
    """Move each feedback case into validation with its confirmed label; returns the new split (`items` updated in place)."""
    entries = read_feedback(Path(site_dir) / FEEDBACK_FILE, items, label_space)
    moved = {e.case_id for e in entries}
    for entry in entries:
        item = items[entry.case_id]
        items[entry.case_id] = {**item, "label": label_space.index(entry.confirmed_diagnosis), "meta": {**item.get("meta", {}), "feedback": True}}
    out = {name: [pid for pid in ids if pid not in moved] for name, ids in split.items()}
    out[VALIDATION] = out.get(VALIDATION, []) + [e.case_id for e in entries if e.case_id not in out.get(VALIDATION, [])]
    return out


def feedback_count(items: Iterable[dict[str, Any]]) -> int:
    return sum(bool((item.get("meta") or {}).get("feedback")) for item in items)
