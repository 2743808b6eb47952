"""Shamir's t-of-n secret sharing over a prime field (Shamir 1979, "How to share a secret").

Secure aggregation shares each site's mask secrets this way, so the coordinator can
remove the masks of sites that drop out once any t of the others answer, and learns
nothing from fewer than t shares. The field is GF(2^521 - 1), a Mersenne prime that
holds any 32-byte secret (an X25519 private key, a mask seed) as one element.
"""
from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

PRIME = 2**521 - 1
SHARE_BYTES = (PRIME.bit_length() + 7) // 8  # 66: one field element, big-endian


class NotEnoughShares(ValueError):
    """Fewer than the threshold of shares: the secret is information-theoretically hidden."""


@dataclass(frozen=True)
class Share:
    x: int
    """The holder's evaluation point, 1..n (never 0: f(0) is the secret)."""
    y: int

    def to_bytes(self) -> bytes:
        return self.y.to_bytes(SHARE_BYTES, "big")

    @classmethod
    def from_bytes(cls, x: int, data: bytes) -> Share:
        if len(data) != SHARE_BYTES:
            raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
        return cls(x, int.from_bytes(data, "big"))


def split(secret: bytes, threshold: int, points: Sequence[int]) -> dict[int, Share]:
    """Shares of `secret` for the evaluation points `points`; any `threshold` of them rebuild it."""
    if not 1 <= threshold <= len(points):
        raise ValueError(f"threshold must be in [1, {len(points)}], got {threshold}")
    if len(set(points)) != len(points) or any(not 0 < x < PRIME for x in points):
        raise ValueError(f"evaluation points must be distinct and in (0, p): {list(points)}")
    value = int.from_bytes(secret, "big")
    if value >= PRIME:
        raise ValueError(f"secret of {len(secret)} bytes does not fit the field")
    coefficients = [value] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: Share(x, _evaluate(coefficients, x)) for x in points}


def combine(shares: Sequence[Share], threshold: int, size: int) -> bytes:
    """The secret (`size` bytes) from at least `threshold` shares, by Lagrange interpolation at 0."""
    unique = {s.x: s for s in shares}
    if len(unique) < threshold:
        raise NotEnoughShares(f"{len(unique)} distinct shares, but {threshold} are needed to reconstruct the secret")
    chosen = list(unique.values())[:threshold]
    secret = 0
    for share in chosen:
        numerator, denominator = 1, 1
        for other in chosen:
            if other.x != share.x:
                numerator = numerator * (-other.x) % PRIME
                denominator = denominator * (share.x - other.x) % PRIME
        secret = (secret + share.y * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 256**size:
        raise ValueError(f"shares are inconsistent: they rebuild a value wider than {size} bytes")
    return secret.to_bytes(size, "big")


def _evaluate(coefficients: list[int], x: int) -> int:
    result = 0
    for c in reversed(coefficients):
        result = (result * x + c) % PRIME
    return result
