"""Writing the run folder so that a failed run leaves nothing half-written, and reading its model back.

Every file is written to a temporary name in the same folder and renamed into
place; the caller writes them only after training and evaluation succeeded.
A model file that is missing, truncated or not safetensors is a DataError naming it.
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from modalities.base import DataError


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: Path, data: dict) -> None:
    write_atomic(path, lambda p: p.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=True) + "\n"))


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda p: p.write_text(text))


def write_rows(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))

    def write(p: Path) -> None:
        with p.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    write_atomic(path, write)


def write_model(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    write_atomic(path, lambda p: save_file(tensors, str(p), metadata=metadata))


def model_metadata(path: Path) -> dict[str, str]:
    """The metadata of a model file (its label list, task); DataError when it is missing or damaged."""
    with _readable(path):
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}


def read_model(path: Path) -> dict[str, torch.Tensor]:
    with _readable(path):
        return load_file(str(path))


class _readable:
    """Turns safetensors' and the OS's errors about a model file into one DataError that names it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(self.path, "no model in the run folder")
        if not self.path.is_file():
            raise DataError(self.path, "not a regular file: expected a model (safetensors)")

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, trace) -> bool:
        if isinstance(error, (SafetensorError, OSError)) and not isinstance(error, DataError):
            reason = " ".join(str(error).split())[:200]
            raise DataError(self.path, f"not a readable safetensors model (truncated or damaged?): {reason}") from error
        return False
