"""Who takes part in a round, and what a round needs to count: fraction, minimum, deadline, retries.

Sites are sampled per round (a fraction of the consortium, never fewer than the
minimum), deterministically from the run's seed so runs repeat. A site that raises
or misses the deadline is left out of that round only, and is sampled again
later. A round with fewer usable updates than the minimum is tried again with a
fresh sample up to `retries` times, then recorded as failed (the global model
stays as it was).

In the in-process engine the deadline is checked when a site's training returns
(it cannot pre-empt a Python call); a deployed coordinator enforces it as a reply
timeout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Participation:
    fraction: float = 1.0
    """Share of the consortium's sites asked to train each round."""
    min_sites: int = 1
    """Usable updates a round needs; fewer and the round is retried, then recorded as failed."""
    deadline_s: float | None = None
    """Seconds a site may take for its local training; None: no deadline."""
    retries: int = 0
    """Fresh samples tried when a round falls short of min_sites, before it is recorded as failed."""

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"participation.fraction must be in (0, 1], got {self.fraction}")
        if self.min_sites < 1:
            raise ValueError(f"participation.min_sites must be at least 1, got {self.min_sites}")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ValueError(f"participation.deadline_s must be positive (or null), got {self.deadline_s}")
        if self.retries < 0:
            raise ValueError(f"participation.retries must be >= 0, got {self.retries}")

    def check(self, n_sites: int) -> None:
        if self.min_sites > n_sites:
            raise ValueError(f"participation.min_sites is {self.min_sites} but the consortium has only {n_sites} sites")

    def sample(self, n_sites: int, round_: int, attempt: int, seed: int) -> list[int]:
        """Indices of the sites asked to train in this attempt of this round (sorted)."""
        k = min(n_sites, max(self.min_sites, math.ceil(self.fraction * n_sites)))
        if k == n_sites:
            return list(range(n_sites))
        rng = np.random.default_rng([seed, round_, attempt])
        return sorted(int(i) for i in rng.choice(n_sites, size=k, replace=False))

    def missed_deadline(self, seconds: float) -> bool:
        return self.deadline_s is not None and seconds > self.deadline_s
