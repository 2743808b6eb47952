"""The update validator in front of every strategy: refuse, and say why, rather than stop the round.

Each update is first checked for what the global model cannot absorb (unknown
keys, wrong shapes or dtypes, NaN/Inf, keys without samples), then for a norm far
outside the round's cohort: more than `max_norm_ratio` times the median norm of
the round's well-formed updates. Norms are taken over the keys every well-formed
update sent (fusion, head): a site with more modalities trains more parameters,
and its whole update is larger without being an outlier. A refused update is left out of the aggregate and
its reason goes into the round's record; the round goes on with the others.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from federation.state import StateDict
from federation.strategies.base import update_problem
from federation.update import ModelUpdate


@dataclass
class UpdateValidator:
    max_norm_ratio: float | None = 10.0
    """Refuse norms above this multiple of the cohort's median; None turns the norm rule off."""
    min_cohort: int = 3
    """The norm rule needs at least this many well-formed updates (a median of two says little)."""

    def __post_init__(self) -> None:
        if self.max_norm_ratio is not None and self.max_norm_ratio <= 1:
            raise ValueError(f"max_norm_ratio must be above 1 (or null to disable), got {self.max_norm_ratio}")

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
        norms = {u.site: shared_norm(u, shared) for u in well_formed}
        bound = self._norm_bound(list(norms.values())) if shared else None
        for update in well_formed:
            if bound is not None and norms[update.site] > bound:
                rejected[update.site] = (
                    f"update norm {norms[update.site]:.4g} (over the {len(shared)} parameters every site sent) is more "
                    f"than {self.max_norm_ratio:g}x the cohort median {statistics.median(norms.values()):.4g}"
                )
            else:
                accepted.append(update)
        return accepted, rejected

    def _norm_bound(self, norms: list[float]) -> float | None:
        if self.max_norm_ratio is None or len(norms) < self.min_cohort:
            return None
        median = statistics.median(norms)
        return self.max_norm_ratio * median if median > 0 else None


def shared_norm(update: ModelUpdate, keys: set[str]) -> float:
    """L2 norm of the update over `keys` only."""
    return float(sum(float((update.deltas[k].double() ** 2).sum()) for k in keys) ** 0.5)
