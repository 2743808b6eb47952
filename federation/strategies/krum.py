"""Multi-Krum, then modality-aware FedAvg over the selected sites.

Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent" (NeurIPS). Each update is scored by the summed squared distance
to its n - f - 2 nearest neighbours, computed over the keys that every update
shares (sites with different modalities still compare on fusion and head). Krum
keeps the n_selected lowest-scoring sites (n_selected=1 is Krum) and averages them.

Modality-aware, "the n_selected best" is taken per key among the sites that sent
it, so a modality no top-ranked site holds is still trained; the round's suspects
are left out of every key they sent, so that a thin key (held by one honest site and
the attacker) is not the attacker's. Suspects are the f worst-scoring sites whose
score distance (the square root of the score) is more than `suspect_ratio` times
the median site's, as the other robust rules judge distance (robust_groups.py);
`suspect_ratio: null` makes them the f worst always. Always was the first rule,
and on the synthetic consortium it left academic_centre, the largest site and the
only one with all five modalities, out of every key in all 30 clean rounds: the
most different honest site is the worst-scoring one. When every site sends every
key and n_selected <= n - f, this is Multi-Krum exactly. Krum's guarantee needs
n > 2f + 2 sites.
"""
from __future__ import annotations

import logging
import math
import statistics

import torch

from federation.robust import flatten, krum_scores, shared_keys
from federation.strategies.base import Strategy
from federation.strategies.fedavg import FedAvg
from federation.strategies.robust_groups import exclusion_reasons, senders_per_key
from federation.update import ModelUpdate

log = logging.getLogger(__name__)
TOO_FEW_SITES = "Krum with %d sites and f=%d: its guarantee needs more than 2f + 2 sites"


class MultiKrum(Strategy):
    def __init__(self, n_byzantine: int = 1, n_selected: int = 1, suspect_ratio: float | None = 3.0, server_lr: float = 1.0):
        if n_byzantine < 0 or n_selected < 1:
            raise ValueError(f"need n_byzantine >= 0 and n_selected >= 1, got {n_byzantine}, {n_selected}")
        self.n_byzantine = n_byzantine
        self.n_selected = n_selected
        self.suspect_ratio = suspect_ratio
        self.server_lr = server_lr
        self.exclusions: dict[str, str] = {}

    def scores(self, updates: list[ModelUpdate]) -> dict[str, float]:
        """Per site, its Krum score over the keys every update sent."""
        if len(updates) <= 2 * self.n_byzantine + 2:
            log.warning(TOO_FEW_SITES, len(updates), self.n_byzantine)
        keys = shared_keys(updates)
        if not keys:
            raise ValueError("Krum needs at least one parameter that every site sent; these updates share none")
        scores = krum_scores([flatten(u.deltas, keys) for u in updates], self.n_byzantine)
        return {u.site: float(s) for u, s in zip(updates, scores)}

    def select(self, updates: list[ModelUpdate]) -> dict[str, list[ModelUpdate]]:
        """Per key, the n_selected best-scoring of its senders, never a suspect (ties: earlier update)."""
        scores = self.scores(updates)
        ranked = sorted(range(len(updates)), key=lambda i: scores[updates[i].site])
        rejected = self.suspects(scores, [updates[i].site for i in ranked])
        senders = senders_per_key(updates)
        chosen = {key: [updates[i] for i in ranked if updates[i].site in sites and updates[i].site not in rejected][: self.n_selected]
                  for key, sites in senders.items()}
        left_out = {}
        for key, sites in senders.items():
            for site in set(sites) - {u.site for u in chosen[key]}:
                left_out[site] = left_out.get(site, 0) + 1
        rank = {updates[i].site: r + 1 for r, i in enumerate(ranked)}
        why = {site: f"Krum score {scores[site]:.4g}, rank {rank[site]} of {len(updates)}"
               + (f", a suspect: among the f={self.n_byzantine} worst" + self._how_far(scores, site) if site in rejected else "")
               for site in left_out}
        self.exclusions = exclusion_reasons(updates, left_out, why, f"not among the n_selected={self.n_selected} best of their senders")
        return chosen

    def suspects(self, scores: dict[str, float], ranked: list[str]) -> set[str]:
        """Of the f worst-scoring sites (`ranked` best first), those whose score distance is beyond the ratio."""
        worst = ranked[len(ranked) - min(self.n_byzantine, len(ranked) - 1) :]
        typical = statistics.median(math.sqrt(s) for s in scores.values())
        return {site for site in worst if self.suspect_ratio is None or math.sqrt(scores[site]) > self.suspect_ratio * typical}

    def _how_far(self, scores: dict[str, float], site: str) -> str:
        typical = statistics.median(math.sqrt(s) for s in scores.values())
        return f" (score distance {math.sqrt(scores[site]):.4g}; median site {typical:.4g})"

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        combined = {}
        for key, chosen in self.select(updates).items():
            combined |= FedAvg().combine([_only(u, key) for u in chosen])
        return combined

    def round_findings(self) -> dict[str, str]:
        return dict(self.exclusions)


def _only(update: ModelUpdate, key: str) -> ModelUpdate:
    return ModelUpdate(update.site, update.round, {key: update.deltas[key]}, {key: update.sample_counts[key]}, update.n_samples)
