"""What a diagnosis run keeps for scoring new patients: the federated scorer and the counts the sites shared.

Both are what already left the sites (weights and k-suppressed aggregate counts), so
the run folder holds no patient's data. `model.safetensors` carries the label list and
the task in its metadata; `case_counts.npz` the per-disease case, term and gene counts.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy import sparse

from federation.outputs import model_metadata, read_model, write_atomic, write_model
from federation.tasks.diagnosis.case_profiles import CaseCounts
from modalities.base import DataError

TASK = "open_diagnosis"
MODEL_FILE, COUNTS_FILE = "model.safetensors", "case_counts.npz"


def save_run_model(run_dir: Path, state: dict[str, torch.Tensor], counts: CaseCounts, labels: tuple[str, ...]) -> None:
    write_model(run_dir / MODEL_FILE, state, {"labels": json.dumps(list(labels)), "task": TASK})
    arrays = {"cases": counts.cases, "terms": counts.terms.toarray().astype(np.float32), "genes": counts.genes.toarray().astype(np.float32)}
    write_atomic(run_dir / COUNTS_FILE, lambda p: np.savez_compressed(open(p, "wb"), **arrays))


def is_diagnosis_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / COUNTS_FILE).is_file()


def load_run_model(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], CaseCounts, tuple[str, ...]]:
    run_dir = Path(run_dir)
    weights = run_dir / MODEL_FILE
    metadata = model_metadata(weights)  # a missing or damaged file: one DataError naming it
    if metadata.get("task") != TASK or not metadata.get("labels"):
        raise DataError(weights, f"not a diagnosis run's model (task {metadata.get('task')!r})", field="task")
    labels = tuple(json.loads(metadata["labels"]))
    try:
        with np.load(run_dir / COUNTS_FILE) as data:
            counts = CaseCounts(data["cases"].astype(np.int64), sparse.csr_matrix(data["terms"]), sparse.csr_matrix(data["genes"]))
    except (OSError, KeyError, ValueError) as error:
        raise DataError(run_dir / COUNTS_FILE, f"unreadable case counts: {error}") from None
    if len(counts.cases) != len(labels):
        raise DataError(run_dir / COUNTS_FILE, f"{len(counts.cases)} diseases counted but {len(labels)} labels in the model", field="cases")
    return read_model(weights), counts, labels
