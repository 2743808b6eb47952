"""Optional compression of model updates: encoded at the site, decoded by the coordinator.

A site's update is a dict of float deltas; on the wire it becomes a flat dict of
tensors ("<key>/<part>"), serialised with safetensors, so its size is what a
transport would send. The coordinator decodes with its global state as the
template (shapes and dtypes), so a payload carries no metadata beyond its parts.

Codecs (one per option, all lossy but `none`):
- `fp16`: half precision, 2 bytes a value.
- `int8`: per-tensor affine 8-bit quantisation (scale and zero point, as torch's quint8), 1 byte a value.
- `topk`: the `fraction` largest-magnitude values and their int32 positions
  (Aji & Heafield 2017, "Sparse Communication for Distributed Gradient Descent";
  with error feedback as in Stich et al. 2018, "Sparsified SGD with Memory",
  what a site does not send is added to its next update).

`CompressingSite` applies a codec around an unchanged Site, the way
federation/attacks.py wraps one: the simulation measures the bytes and the
accuracy cost without touching the engine. `with_compression` wraps a
consortium's sites from a config entry (`federation.compression`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from safetensors.torch import save

from federation.update import ModelUpdate

Payload = dict[str, torch.Tensor]
SEPARATOR = "/"


class Codec:
    """Encodes one float tensor into named parts and back; `decode` gets the original's shape and dtype."""

    name = "none"

    def encode(self, tensor: torch.Tensor) -> Payload:
        return {"values": tensor.contiguous()}

    def decode(self, parts: Payload, like: torch.Tensor) -> torch.Tensor:
        return parts["values"].to(like.dtype).reshape(like.shape)


class Float16(Codec):
    name = "fp16"

    def encode(self, tensor: torch.Tensor) -> Payload:
        return {"values": tensor.to(torch.float16).contiguous()}


class Int8(Codec):
    """Affine uint8 over the tensor's own [min, max] (0 included): the error is at most half a step, (max - min) / 510."""

    name = "int8"

    def encode(self, tensor: torch.Tensor) -> Payload:
        low, high = min(float(tensor.min()), 0.0), max(float(tensor.max()), 0.0)  # zero stays exactly representable
        scale = (high - low) / 255 or 1.0
        zero_point = round(-low / scale)
        values = torch.round(tensor.double() / scale + zero_point).clamp_(0, 255).to(torch.uint8)
        return {"values": values.contiguous(), "qparams": torch.tensor([scale, zero_point], dtype=torch.float64)}

    def decode(self, parts: Payload, like: torch.Tensor) -> torch.Tensor:
        scale, zero_point = parts["qparams"].tolist()
        return ((parts["values"].double() - zero_point) * scale).to(like.dtype).reshape(like.shape)


@dataclass
class TopK(Codec):
    """The largest-magnitude `fraction` of values (at least one) and their flat positions."""

    fraction: float = 0.01
    name = "topk"

    def __post_init__(self):
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"topk fraction must be in (0, 1], got {self.fraction}")

    def encode(self, tensor: torch.Tensor) -> Payload:
        flat = tensor.reshape(-1)
        k = max(1, round(self.fraction * flat.numel()))
        positions = flat.abs().topk(k, sorted=False).indices
        return {"values": flat[positions].contiguous(), "indices": positions.to(torch.int32)}

    def decode(self, parts: Payload, like: torch.Tensor) -> torch.Tensor:
        flat = torch.zeros(like.numel(), dtype=like.dtype)
        flat[parts["indices"].long()] = parts["values"].to(like.dtype)
        return flat.reshape(like.shape)


CODECS = {"none": Codec, "fp16": Float16, "int8": Int8, "topk": TopK}


def make_codec(kind: str, **options) -> Codec:
    if kind not in CODECS:
        raise ValueError(f"unknown update compression {kind!r}; known: {sorted(CODECS)}")
    return CODECS[kind](**options)


def encode_update(deltas: Mapping[str, torch.Tensor], codec: Codec) -> Payload:
    """Site side: the flat wire payload of an update's deltas (non-float tensors travel as they are)."""
    wire = {}
    for key, delta in deltas.items():
        parts = codec.encode(delta) if delta.is_floating_point() else {"values": delta.contiguous()}
        wire |= {f"{key}{SEPARATOR}{part}": tensor for part, tensor in parts.items()}
    return wire


def decode_update(wire: Mapping[str, torch.Tensor], codec: Codec, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Coordinator side: the deltas back, shaped and typed like the global state's tensors of the same keys."""
    grouped: dict[str, Payload] = {}
    for name, tensor in wire.items():
        key, _, part = name.rpartition(SEPARATOR)
        grouped.setdefault(key, {})[part] = tensor
    unknown = set(grouped) - set(like)
    if unknown:
        raise KeyError(f"compressed update has keys the global state does not: {sorted(unknown)[:5]}")
    return {key: codec.decode(parts, like[key]) if like[key].is_floating_point() else parts["values"] for key, parts in grouped.items()}


def wire_bytes(wire: Mapping[str, torch.Tensor]) -> int:
    """Bytes of the payload serialised with safetensors (header included): what a transport would carry."""
    return len(save(dict(wire)))


class CompressingSite:
    """A Site whose updates pass through `codec` on their way to the coordinator; everything else is the site's own.

    `error_feedback`: what the codec lost this round is added to the next round's
    deltas at this site (it never leaves the site), so a sparsifying codec delays
    small changes instead of dropping them.
    """

    def __init__(self, site, codec: Codec, error_feedback: bool = True):
        self._site, self.codec, self.error_feedback = site, codec, error_feedback
        self.residual: dict[str, torch.Tensor] = {}
        self.sent_bytes: list[int] = []

    def __getattr__(self, name):
        return getattr(self._site, name)

    def train(self, *args, **kwargs) -> ModelUpdate:
        update = self._site.train(*args, **kwargs)
        deltas = {k: d + self.residual[k] if k in self.residual else d for k, d in update.deltas.items()}
        wire = encode_update(deltas, self.codec)
        self.sent_bytes.append(wire_bytes(wire))
        update.deltas = decode_update(wire, self.codec, deltas)
        if self.error_feedback:
            self.residual = {k: deltas[k] - update.deltas[k] for k in deltas if deltas[k].is_floating_point()}
        return update


def with_compression(sites: list, compression: Mapping | None) -> list:
    """The sites, each wrapped in a CompressingSite if the config asks for compression (`federation.compression`).

    `compression`: None (off) or {kind: fp16|int8|topk|none, error_feedback: true, <codec options such as fraction>}.
    """
    if not compression:
        return list(sites)
    options = dict(compression)
    kind, error_feedback = options.pop("kind"), bool(options.pop("error_feedback", True))
    return [CompressingSite(site, make_codec(kind, **options), error_feedback) for site in sites]
