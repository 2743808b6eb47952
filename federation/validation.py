"""The update validator in front of every strategy: refuse, and say why, rather than stop the round.

Each update is first checked for what the global model cannot absorb (unknown
keys, wrong shapes or dtypes, NaN/Inf, keys without samples), then for a norm far
outside the round's cohort: more than `max_norm_ratio` times the median norm of
the round's well-formed updates. Norms are taken over the keys every well-formed
update sent (fusion, head): a site with more modalities trains more parameters,
and its whole update is larger without being an outlier. Optionally (`min_cosine`)
an update must also point the cohort's way: its cosine, over the same keys, with
the coordinate-wise median of the round's well-formed updates must reach
`min_cosine`. The median is the reference because a mean is the attacker's to
pull; a sign-flipped update has a negative cosine with it however small its norm,
which the norm rule cannot see. Off by default: honest sites with very different
data can disagree early in training, and the governance monitor already flags
such directions without refusing them. A refused update is left out of the aggregate and
its reason goes into the round's record; the round goes on with the others.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from federation.robust import coordinate_median, flatten, norm_over
from federation.state import StateDict
from federation.strategies.base import update_problem
from federation.update import ModelUpdate


@dataclass
class UpdateValidator:
    max_norm_ratio: float | None = 10.0
    """Refuse norms above this multiple of the cohort's median; None turns the norm rule off."""
    min_cohort: int = 3
    """The norm and direction rules need at least this many well-formed updates (a median of two says little)."""
    min_cosine: float | None = None
    """Refuse updates whose cosine with the cohort's coordinate-wise median is below this (e.g. 0.0); None: off."""

    def __post_init__(self) -> None:
        if self.max_norm_ratio is not None and self.max_norm_ratio <= 1:
            raise ValueError(f"max_norm_ratio must be above 1 (or null to disable), got {self.max_norm_ratio}")
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise ValueError(f"min_cosine must be in [-1, 1] (or null to disable), got {self.min_cosine}")

    def screen(self, updates: list[ModelUpdate], global_state: StateDict) -> tuple[list[ModelUpdate], dict[str, str]]:
        """The updates to aggregate, and per refused site the reason."""
        rejected: dict[str, str] = {}
        well_formed = []
        for update in updates:
            problem = update_problem(update, global_state)
            if problem:
                rejected[update.site] = problem
            else:
                well_formed.append(update)
        accepted = []
        shared = set.intersection(*(set(u.deltas) for u in well_formed)) if well_formed else set()
        norms = {u.site: norm_over(u.deltas, shared) for u in well_formed}
        bound = self._norm_bound(list(norms.values())) if shared else None
        cosines = self._cosines(well_formed, sorted(shared))
        for update in well_formed:
            if bound is not None and norms[update.site] > bound:
                rejected[update.site] = (
                    f"update norm {norms[update.site]:.4g} (over the {len(shared)} parameters every site sent) is more "
                    f"than {self.max_norm_ratio:g}x the cohort median {statistics.median(norms.values()):.4g}"
                )
            elif update.site in cosines and cosines[update.site] < self.min_cosine:
                rejected[update.site] = (
                    f"update direction: cosine {cosines[update.site]:.3f} with the cohort's coordinate-wise median (over the "
                    f"{len(shared)} parameters every site sent) is below min_cosine={self.min_cosine:g}"
                )
            else:
                accepted.append(update)
        return accepted, rejected

    def _cosines(self, updates: list[ModelUpdate], keys: list[str]) -> dict[str, float]:
        """Per site, the cosine of its update with the coordinate-wise median of all, over `keys`; empty when the rule is off."""
        if self.min_cosine is None or not keys or len(updates) < self.min_cohort:
            return {}
        flat = torch.stack([flatten(u.deltas, keys) for u in updates])
        median = coordinate_median(list(flat))  # with an even count, the mean of the two middle values
        cosine = torch.nn.functional.cosine_similarity(flat, median.unsqueeze(0), dim=1)
        return {u.site: float(c) for u, c in zip(updates, cosine)}

    def _norm_bound(self, norms: list[float]) -> float | None:
        if self.max_norm_ratio is None or len(norms) < self.min_cohort:
            return None
        median = statistics.median(norms)
        return self.max_norm_ratio * median if median > 0 else None
