"""Canonical JSON and SHA-256 digests, so a ledger entry or a model hashes the same on every machine.

Canonical JSON here is sorted keys, no spaces, UTF-8, no NaN (non-finite floats
become null, since NaN is not JSON and two writers would spell it differently).
A model's hash covers each tensor's key, dtype, shape and bytes in sorted key
order, so it identifies the weights whatever file format they travel in.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

GENESIS = "0" * 64  # the `prev` of a chain's first entry
CHUNK = 1 << 20


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy/torch scalars to Python, tuples to lists, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        items = sorted(value) if isinstance(value, set) else value
        return [jsonable(v) for v in items]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def canonical_json(value: Any) -> str:
    return json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_hash(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors in sorted key order: key, dtype, shape, then the raw bytes."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
