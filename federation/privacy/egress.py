"""What may leave a site: every outgoing message is serialised one way and checked against an allow-list.

A site's messages are safetensors files (arrays, no pickled code) whose header
metadata holds the message kind and a small JSON of declared fields. `check_egress`
parses the bytes itself and refuses anything not on the list: an unknown array
name, a shape or dtype that the global model or the protocol does not define, an
undeclared field, a metric not on the list, trailing bytes. It proves the *format*
carries nothing but parameters, counts, metrics and protocol keys; it cannot tell
whether a site hid data inside its float deltas (only DP bounds that).

A deployed site's other replies go through the same check (federation/flower/egress.py):
which site it is (`site_identity`), the global model's metrics on its splits
(`evaluation`), what it reports beside a secure-aggregation advert (`train_report`)
and a round it declines because its privacy budget is spent (`declined`).
"""
from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping

import numpy as np
from safetensors.numpy import save

from federation.privacy import crypto, shamir
from federation.privacy.messages import (
    KeyAdvert,
    MaskedInput,
    Roster,
    ShareBundle,
    UnmaskResponse,
)
from federation.update import ModelUpdate
from models.metrics import METRIC_NAMES

METRICS = frozenset({"train_loss", "epsilon", "delta"})
EVALUATION_METRICS = frozenset(f"{split}_{name}" for split in ("val", "test") for name in (*METRIC_NAMES, "n_patients"))  # split sizes, as model cards show
SITE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PLAN = re.compile(r"^[0-9a-f]{16}$")
MAX_REASON = 600
MAX_HEADER = 1 << 24
SHARE_CIPHERTEXT = crypto.NONCE_BYTES + 2 * shamir.SHARE_BYTES + crypto.TAG_BYTES
FIELDS = {  # kind -> declared fields and their types
    "model_update": {"site": str, "round": int, "sample_counts": dict, "n_samples": int, "metrics": dict},
    "key_advert": {"site": str, "round": int, "keys": dict},
    "share_bundle": {"site": str, "round": int},
    "masked_input": {"site": str, "round": int},
    "unmask_response": {"site": str, "round": int},
    "site_identity": {"site": str, "plan": str},
    "evaluation": {"site": str, "round": int, "metrics": dict},
    "train_report": {"site": str, "round": int, "n_samples": int, "metrics": dict},
    "declined": {"site": str, "round": int, "reason": str, "metrics": dict},
}
NO_ARRAYS = ("site_identity", "evaluation", "train_report", "declined")
ALLOWED_METRICS = {"model_update": METRICS, "train_report": METRICS, "declined": METRICS, "evaluation": EVALUATION_METRICS}
DTYPES = {"F32": np.float32, "F64": np.float64, "U8": np.uint8, "U32": np.uint32, "U64": np.uint64}


class EgressViolation(ValueError):
    """A site was about to send something the allow-list does not name."""


def serialise_update(update: ModelUpdate) -> bytes:
    arrays = {k: d.detach().cpu().float().numpy() for k, d in update.deltas.items()}
    arrays |= {f"control/{k}": d.detach().cpu().float().numpy() for k, d in update.control_deltas.items()}  # SCAFFOLD
    fields = {"site": update.site, "round": update.round, "sample_counts": dict(update.sample_counts),
              "n_samples": update.n_samples, "metrics": {k: float(v) for k, v in update.metrics.items()}}
    return _pack("model_update", fields, arrays)


def serialise_message(message) -> bytes:
    """A secure-aggregation message a site sends, in the same envelope."""
    fields = {"site": message.site, "round": message.round}
    if isinstance(message, KeyAdvert):
        arrays = {"cipher_public": _bytes(message.cipher_public), "mask_public": _bytes(message.mask_public)}
        return _pack("key_advert", fields | {"keys": {k: list(s) for k, s in message.keys.items()}}, arrays)
    if isinstance(message, ShareBundle):
        return _pack("share_bundle", fields, {f"share/{peer}": _bytes(c) for peer, c in message.ciphertexts.items()})
    if isinstance(message, MaskedInput):
        return _pack("masked_input", fields, {f"group/{gid}": v for gid, v in message.vectors.items()})
    if isinstance(message, UnmaskResponse):
        arrays = {f"seed_share/{s}": _bytes(b) for s, b in message.seed_shares.items()}
        return _pack("unmask_response", fields, arrays | {f"key_share/{s}": _bytes(b) for s, b in message.key_shares.items()})
    raise TypeError(f"no egress format for {type(message).__name__}")


def serialise_fields(kind: str, fields: dict) -> bytes:
    """A deployed site's reply that carries declared fields only (see NO_ARRAYS), in the same envelope."""
    if kind not in NO_ARRAYS:
        raise TypeError(f"{kind!r} messages carry arrays; use serialise_update or serialise_message")
    return _pack(kind, fields, {})


def check_egress(message_bytes: bytes, allowed_keys_shapes: Mapping[str, tuple[int, ...]], roster: Roster | None = None) -> None:
    """Raise EgressViolation unless the message holds only allowed arrays and declared fields.

    `allowed_keys_shapes`: the global model's travelling keys and shapes. `roster`:
    the secure-aggregation round, which fixes peers and masked-vector lengths.
    """
    header, payload = _parse(message_bytes)
    kind, fields = _metadata(header.pop("__metadata__", None))
    _check_fields(kind, fields, allowed_keys_shapes)
    allowed = _allowed_arrays(kind, fields, allowed_keys_shapes, roster)
    _check_arrays(header, payload, allowed)


def _pack(kind: str, fields: dict, arrays: dict[str, np.ndarray]) -> bytes:
    return save(arrays, metadata={"kind": kind, "fields": json.dumps(fields, sort_keys=True)})


def _bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).copy()


def _parse(data: bytes) -> tuple[dict, bytes]:
    if len(data) < 8:
        raise EgressViolation("message shorter than a safetensors header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > MAX_HEADER or 8 + size > len(data):
        raise EgressViolation(f"header length {size} does not fit a message of {len(data)} bytes")
    raw = data[8 : 8 + size]
    text = raw.decode("utf-8", errors="strict").rstrip(" ")
    return json.loads(text, object_pairs_hook=_no_duplicates), data[8 + size :]


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise EgressViolation(f"duplicate names in the header: {sorted(k for k in set(keys) if keys.count(k) > 1)}")
    return dict(pairs)


def _metadata(metadata) -> tuple[str, dict]:
    if not isinstance(metadata, dict) or set(metadata) != {"kind", "fields"}:
        raise EgressViolation(f"metadata must hold exactly 'kind' and 'fields', got {sorted(metadata or {})}")
    kind = metadata["kind"]
    if kind not in FIELDS:
        raise EgressViolation(f"unknown message kind {kind!r}; allowed: {sorted(FIELDS)}")
    fields = json.loads(metadata["fields"], object_pairs_hook=_no_duplicates)
    if not isinstance(fields, dict) or set(fields) != set(FIELDS[kind]):
        raise EgressViolation(f"{kind}: fields {sorted(fields)} differ from the allowed {sorted(FIELDS[kind])}")
    for name, kind_type in FIELDS[kind].items():
        if type(fields[name]) is not kind_type:
            raise EgressViolation(f"{kind}: field {name!r} must be {kind_type.__name__}, got {type(fields[name]).__name__}")
    if not SITE_NAME.match(fields["site"]):
        raise EgressViolation(f"{kind}: site name {fields['site'][:80]!r} is not an identifier")
    return kind, fields


def _check_fields(kind: str, fields: dict, allowed_keys_shapes: Mapping) -> None:
    if kind == "model_update":
        counts = fields["sample_counts"]
        if set(counts) - set(allowed_keys_shapes) or not all(type(c) is int and c >= 0 for c in counts.values()):
            raise EgressViolation("model_update: sample_counts must map known keys to non-negative integers")
    if kind in ALLOWED_METRICS:
        _check_metrics(kind, fields["metrics"], ALLOWED_METRICS[kind])
    if kind == "site_identity" and not PLAN.match(fields["plan"]):
        raise EgressViolation("site_identity: the plan must be a consortium plan fingerprint (16 hex digits)")
    if kind == "declined" and len(fields["reason"]) > MAX_REASON:
        raise EgressViolation(f"declined: a reason of {len(fields['reason'])} characters, more than {MAX_REASON}")
    if kind == "key_advert":
        for key, shape in fields["keys"].items():
            if key not in allowed_keys_shapes or tuple(shape) != tuple(allowed_keys_shapes[key]):
                raise EgressViolation(f"key_advert: {key[:80]!r} with shape {shape} is not a parameter of the global model")


def _check_metrics(kind: str, metrics: dict, allowed: frozenset[str]) -> None:
    unknown = sorted(set(metrics) - allowed)
    if unknown or not all(isinstance(v, float) for v in metrics.values()):
        listed = "" if allowed is EVALUATION_METRICS else f" {sorted(allowed)}"  # the evaluation list is long
        raise EgressViolation(f"{kind}: metrics {unknown[:5]} are not on the allow-list{listed} (or not floats)")


def _allowed_arrays(kind: str, fields: dict, shapes: Mapping, roster: Roster | None) -> dict[str, tuple[tuple[int, ...], tuple]]:
    """Array name -> (shape, allowed dtypes) for this message."""
    if kind == "model_update":
        return {name: (tuple(shape), ("F32",)) for k, shape in shapes.items() for name in (k, f"control/{k}")}
    if kind == "key_advert":
        return {n: ((crypto.KEY_BYTES,), ("U8",)) for n in ("cipher_public", "mask_public")}
    if kind in NO_ARRAYS:
        return {}
    if roster is None:
        raise EgressViolation(f"{kind}: a protocol message needs the round's roster to be checked")
    peers = [s for s in roster.sites if s != fields["site"]]
    if kind == "share_bundle":
        return {f"share/{p}": ((SHARE_CIPHERTEXT,), ("U8",)) for p in peers}
    if kind == "masked_input":
        return {f"group/{g.id}": ((g.length,), ("U32", "U64")) for g in roster.groups if fields["site"] in g.holders}
    return {f"{what}/{s}": ((shamir.SHARE_BYTES,), ("U8",)) for s in roster.sites for what in ("seed_share", "key_share")}


def _check_arrays(header: dict, payload: bytes, allowed: dict) -> None:
    end = 0
    for name, info in sorted(header.items(), key=lambda item: item[1].get("data_offsets", [0])[0] if isinstance(item[1], dict) else 0):
        if name not in allowed:
            raise EgressViolation(f"array {name[:80]!r} is not on the allow-list")
        shape, dtypes = allowed[name]
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise EgressViolation(f"array {name!r}: malformed header entry")
        if info["dtype"] not in dtypes or tuple(info["shape"]) != shape:
            raise EgressViolation(f"array {name!r}: {info['dtype']}{tuple(info['shape'])}, allowed {dtypes} {shape}")
        start, stop = info["data_offsets"]
        if start != end or stop - start != math.prod(shape) * np.dtype(DTYPES[info["dtype"]]).itemsize:
            raise EgressViolation(f"array {name!r}: its bytes do not follow the previous array's exactly")
        values = np.frombuffer(payload[start:stop], dtype=DTYPES[info["dtype"]])
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise EgressViolation(f"array {name!r}: NaN or Inf")
        end = stop
    if end != len(payload):
        raise EgressViolation(f"{len(payload) - end} bytes after the last declared array")
