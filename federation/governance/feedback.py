"""Recording a clinician's feedback at a site, and counting it for the ledger and the dashboard.

The entry is checked before it is written (the case must exist at the site, both
diagnoses must be labels of the model that answered), the file is rewritten
atomically, and it stays in the site's folder: only counts leave the site.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from federation.governance.layout import MODEL_FILE
from federation.outputs import model_metadata, write_atomic
from modalities.base import DataError
from modalities.feedback import (
    FEEDBACK_FILE,
    VALIDATION,
    Feedback,
    feedback_count,
    parse_feedback_line,
    read_feedback,
)
from modalities.phenopacket_io import read_cohort


def run_labels(run_dir: str | Path) -> list[str]:
    """The label space of a run's model (its safetensors metadata)."""
    if not Path(run_dir).is_dir():
        raise DataError(run_dir, "no such run folder")
    path = Path(run_dir) / MODEL_FILE
    if not path.exists():
        raise DataError(path, "no model in the run folder: the feedback needs the label space of the model that answered")
    text = model_metadata(path).get("labels")
    if not text:
        raise DataError(path, "no label list in the model's metadata", field="labels")
    return list(json.loads(text))


def record_feedback(
    site_dir: str | Path, case_id: str, model_answer: str, confirmed_diagnosis: str, comment: str, labels: list[str], phenopacket_dir: str = "phenopackets"
) -> Feedback:
    """Validate and append one entry to `<site_dir>/feedback.jsonl`; DataError (file, line, field) on bad input."""
    path = Path(site_dir) / FEEDBACK_FILE
    cases = {r.patient_id for r in read_cohort(Path(site_dir) / phenopacket_dir)}
    earlier = read_feedback(path, cases, set(labels))  # a damaged file is reported, never extended
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    number = len(text.splitlines()) + 1
    data = {"case_id": case_id, "model_answer": model_answer, "confirmed_diagnosis": confirmed_diagnosis, "comment": comment,
            "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    line = json.dumps(data, ensure_ascii=False, sort_keys=True)
    entry = parse_feedback_line(path, number, line, cases, set(labels))
    if any(e.case_id == case_id for e in earlier):
        raise DataError(path, f"case {case_id!r} already has feedback", record=f"line {number}", field="case_id")
    prefix = text if not text or text.endswith("\n") else text + "\n"
    write_atomic(path, lambda p: p.write_text(prefix + line + "\n", encoding="utf-8"))
    return entry


def feedback_counts(consortium: Any) -> dict[str, int]:
    """Per site: clinician feedback cases that joined its validation split."""
    return {site.name: feedback_count(site.splits.get(VALIDATION, [])) for site in consortium.sites}
