"""Fixed-point encoding of weighted float updates into a ring Z_{2^bits}, with a width that cannot overflow.

Masks are uniform in Z_{2^bits}, so what they hide must be integers mod 2^bits.
A site encodes count * delta (clipped so that |delta_j| <= clip for every
coordinate: an L2 clip of the whole update implies it) as round(value * 2^p). The
sum over n sites then has magnitude at most

    n * M,   M = ceil(max_count * clip * 2^p) + 1

and decodes without wrap-around when n * M < 2^(bits - 1) (two's complement). Each
site's value must also be exact in float64 (M <= 2^53) so rounding is the only
error: at most n * 2^-(p+1) on a weighted sum, divided by the summed counts.
The smallest native width (32 or 64 bits) that satisfies both is used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

FLOAT64_EXACT = 2**53
WIDTHS = (32, 64)


class OverflowRisk(ValueError):
    """The configured sites, clip bound, counts and precision do not fit a 64-bit ring."""


@dataclass(frozen=True)
class FixedPointCodec:
    n_sites: int
    clip: float
    precision_bits: int
    max_count: int
    bits: int = field(init=False)

    def __post_init__(self) -> None:
        if self.n_sites < 1 or self.clip <= 0 or self.precision_bits < 0 or self.max_count < 1:
            raise ValueError(f"invalid codec parameters: {self}")
        per_site = self.per_site_bound()
        if per_site > FLOAT64_EXACT:
            raise OverflowRisk(
                f"max_count * clip * 2^precision_bits = {per_site:.3g} exceeds 2^53, where float64 stops being exact; "
                f"lower precision_bits (at most {self.max_precision_bits(FLOAT64_EXACT)}) or the clip bound"
            )
        total = self.n_sites * per_site
        fitting = [w for w in WIDTHS if total < 2 ** (w - 1)]
        if not fitting:
            raise OverflowRisk(
                f"{self.n_sites} sites x {per_site:.3g} = {total:.3g} does not fit a signed 64-bit ring; "
                f"lower precision_bits (at most {self.max_precision_bits(2**63 // self.n_sites)}), the clip bound or max_count"
            )
        object.__setattr__(self, "bits", fitting[0])

    def per_site_bound(self) -> int:
        """The largest |encoded value| one site can send."""
        return math.ceil(self.max_count * self.clip * 2**self.precision_bits) + 1

    def max_precision_bits(self, limit: int) -> int:
        return max(0, math.floor(math.log2(max(limit - 1, 1) / (self.max_count * self.clip))))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(f"uint{self.bits}")

    @property
    def signed(self) -> np.dtype:
        return np.dtype(f"int{self.bits}")

    def encode(self, weighted: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """[round(weighted * 2^p), counts] as ring elements; refuses values outside the derived bound."""
        weighted = np.asarray(weighted, dtype=np.float64)
        counts = np.asarray(counts, dtype=np.int64)
        if weighted.size and np.abs(weighted).max() > self.max_count * self.clip * (1 + 1e-9):
            raise ValueError(f"an encoded value exceeds max_count * clip = {self.max_count * self.clip}; clip the update first")
        if counts.size and (counts.min() < 0 or counts.max() > self.max_count):
            raise ValueError(f"sample counts must lie in [0, {self.max_count}] (max_count), got {counts.min()}..{counts.max()}")
        scaled = np.rint(weighted * 2.0**self.precision_bits).astype(self.signed)
        return np.concatenate([scaled, counts.astype(self.signed)]).view(self.dtype)

    def decode(self, total: np.ndarray, n_counts: int) -> tuple[np.ndarray, np.ndarray]:
        """(weighted sum as float64, summed counts as int64) from a ring sum laid out as `encode` lays it out."""
        signed = np.asarray(total, dtype=self.dtype).view(self.signed)
        split = len(signed) - n_counts
        return signed[:split].astype(np.float64) / 2.0**self.precision_bits, signed[split:].astype(np.int64)
