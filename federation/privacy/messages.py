"""The messages of secure aggregation, one dataclass per step, as they would travel over Flower.

Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving Machine
Learning" (CCS), Figure 4: AdvertiseKeys -> ShareKeys -> MaskedInputCollection ->
Unmasking. Site -> coordinator messages carry a `site`; coordinator -> site ones
do not. Only public keys, ciphertexts, masked vectors and shares ever travel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KeyAdvert:
    """Step 0, site -> coordinator: two public keys and which parameters (and shapes) the site will send."""

    site: str
    round: int
    cipher_public: bytes
    """For encrypting shares to this site."""
    mask_public: bytes
    """For the pairwise masks."""
    keys: dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Group:
    """Parameters held by the same set of sites: masks and sums run among exactly those holders."""

    id: int
    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    holders: tuple[str, ...]

    @property
    def sizes(self) -> list[int]:
        return [int(np.prod(s, dtype=np.int64)) for s in self.shapes]

    @property
    def length(self) -> int:
        """Masked vector length: every coordinate of every key, then one count per key."""
        return sum(self.sizes) + len(self.keys)


@dataclass(frozen=True)
class Roster:
    """Coordinator -> sites: who takes part, their public keys, the groups, the threshold and the encoding."""

    round: int
    sites: tuple[str, ...]
    cipher_public: dict[str, bytes]
    mask_public: dict[str, bytes]
    groups: tuple[Group, ...]
    threshold: int
    clip: float
    precision_bits: int
    max_count: int

    def point(self, site: str) -> int:
        """The site's Shamir evaluation point (1-based position in the roster)."""
        return self.sites.index(site) + 1


@dataclass(frozen=True)
class ShareBundle:
    """Step 1, site -> coordinator: per peer, the encrypted (self-mask seed share, mask key share)."""

    site: str
    round: int
    ciphertexts: dict[str, bytes]


@dataclass(frozen=True)
class RoutedShares:
    """Coordinator -> one site: the ciphertexts addressed to it, by sender (the senders are U2)."""

    round: int
    ciphertexts: dict[str, bytes]


@dataclass(frozen=True)
class MaskedInput:
    """Step 2, site -> coordinator: per group it holds, the masked ring vector."""

    site: str
    round: int
    vectors: dict[int, np.ndarray]


@dataclass(frozen=True)
class UnmaskRequest:
    """Coordinator -> surviving sites: who sent a masked input (U3) and who dropped after sharing."""

    round: int
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class UnmaskResponse:
    """Step 3, site -> coordinator: self-mask seed shares of survivors, mask key shares of the dropped."""

    site: str
    round: int
    seed_shares: dict[str, bytes]
    key_shares: dict[str, bytes]
