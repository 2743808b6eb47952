"""Site-level differential privacy on the aggregate: DP-FedAvg.

McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"
(ICLR): each site's whole update is clipped to L2 norm C, every holder counts once
(fixed weights: sample counts are data and would raise the sensitivity), and
Gaussian noise N(0, (sigma C)^2) is added to each key's sum before dividing by its
number of holders. One site's data then moves the noisy sums by at most C, so
each round is one Gaussian mechanism with noise multiplier sigma, Poisson-subsampled
at the fraction of sites taking part; Opacus's RDP accountant composes the rounds
(federation/privacy/accountant.py), one budget per site.

Trust model: the clip is the sites' step and the noise the coordinator's. Wrapping
SecureFedAvg, the coordinator only ever sees the clipped sum, then adds the noise,
so the released model is DP against everyone else (other sites, model users,
membership inference). Noise added by the sites instead (distributed DP) would
also protect against the coordinator; it is not implemented. In a Flower
deployment with SecureFedAvg the sites themselves clip (to clip_norm, as the
secure-aggregation roster tells them) and weigh every key once (`combine_secure`).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

import torch

from federation.privacy.accountant import PrivacyBudget
from federation.privacy.secagg import ProtocolSites
from federation.robust import clip_to_norm
from federation.state import StateDict
from federation.strategies.base import Strategy
from federation.update import ModelUpdate

log = logging.getLogger(__name__)


class SiteLevelDP(Strategy):
    def __init__(self, inner: Strategy, clip_norm: float, noise_multiplier: float, epsilon: float, delta: float, sample_rate: float = 1.0, seed: int = 0):
        """`inner`: FedAvg or SecureFedAvg, given the clipped updates with unit weights. `sample_rate`: sites per round / sites."""
        if clip_norm <= 0 or noise_multiplier < 0 or not 0 < sample_rate <= 1:
            raise ValueError(f"site-level DP needs clip_norm > 0, noise_multiplier >= 0, 0 < sample_rate <= 1; got {clip_norm}, {noise_multiplier}, {sample_rate}")
        self.inner = inner
        self.server_lr = inner.server_lr
        self.clip_norm, self.noise_multiplier, self.sample_rate = clip_norm, noise_multiplier, sample_rate
        self.epsilon, self.delta = epsilon, delta
        self.budgets: dict[str, PrivacyBudget] = {}
        self.refusals: list[str] = []
        self.generator = torch.Generator().manual_seed(seed)

    def budget(self, site: str) -> PrivacyBudget:
        return self.budgets.setdefault(site, PrivacyBudget(self.epsilon, self.delta, site))

    def would_exceed(self, site: str) -> bool:
        """Ask before a site trains: would one more round overrun its budget?"""
        return not self.budget(site).can_spend(self.noise_multiplier, self.sample_rate)

    def privacy_refusal(self, site: str) -> str | None:
        """Why `site` sits this round out (one more round would overrun its budget), or None; both runtimes ask this."""
        if not self.would_exceed(site):
            return None
        return self.budget(site).refusal(self.noise_multiplier, self.sample_rate)

    def combine(self, updates: list[ModelUpdate]) -> dict[str, torch.Tensor]:
        admitted = self.admit(updates)
        if not admitted:
            return {}
        clipped = [replace(u, deltas=clip_to_norm(u.deltas, self.clip_norm), sample_counts={k: 1 for k in u.deltas}) for u in admitted]
        means = self.inner.combine(clipped)
        holders = {k: sum(k in u.deltas for u in admitted) for k in means}
        return self.release(means, holders, [u.site for u in admitted])

    def combine_secure(self, sites: ProtocolSites, round_: int) -> dict[str, torch.Tensor]:
        """Over secure aggregation with deployed sites: they clip to clip_norm and weigh each key once (unit counts),
        so the unmasked counts are the holders; the coordinator adds the noise. Sites over budget were never asked."""
        secure_sum = getattr(self.inner, "secure_sum", None)
        if secure_sum is None:
            raise TypeError(f"{type(self.inner).__name__} does not aggregate through secure aggregation")
        result = secure_sum(sites, round_, clip=self.clip_norm)
        return self.release(result.means(), result.counts, result.sites)

    def admit(self, updates: list[ModelUpdate]) -> list[ModelUpdate]:
        """The updates of sites whose budget allows this round; the others are refused, with the reason logged."""
        admitted = []
        for update in updates:
            if message := self.privacy_refusal(update.site):
                log.warning(message)
                self.refusals.append(message)
            else:
                admitted.append(update)
        return admitted

    def release(self, means: dict[str, torch.Tensor], holders: Mapping[str, int], sites) -> dict[str, torch.Tensor]:
        """Spend one round of each contributing site's budget and add the Gaussian noise to each key's mean."""
        for site in sites:
            self.budget(site).spend(self.noise_multiplier, self.sample_rate)
        return {k: m + self._noise(m, holders[k]) for k, m in means.items()}

    def state_dict(self) -> dict:
        """What a deployed coordinator checkpoints: every site's budget, the noise generator, the inner strategy's state."""
        budgets = {s: b.state_dict() for s, b in self.budgets.items()}
        return {"budgets": budgets, "generator": self.generator.get_state(), "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.budgets = {s: PrivacyBudget.from_state_dict(b) for s, b in state["budgets"].items()}
        self.generator.set_state(state["generator"])
        if state.get("inner") is not None:
            self.inner.load_state_dict(state["inner"])

    def _noise(self, mean: torch.Tensor, holders: int) -> torch.Tensor:
        std = self.noise_multiplier * self.clip_norm / holders
        return (torch.randn(mean.shape, generator=self.generator, dtype=torch.float64) * std).to(mean.dtype)

    def set_parameter_keys(self, keys) -> None:
        super().set_parameter_keys(keys)
        self.inner.set_parameter_keys(keys)

    def apply(self, global_state: StateDict, deltas: dict[str, torch.Tensor]) -> StateDict:
        return self.inner.apply(global_state, deltas)

    def local_objective(self) -> dict:
        return self.inner.local_objective()

    def secure_weighting(self) -> str:
        """Every holder counts once (sample counts are data and would raise the sensitivity)."""
        return "uniform"

    @property
    def secure_aggregation(self) -> bool:
        """Wrapping SecureFedAvg, the coordinator sees only the clipped sum, as under SecureFedAvg alone."""
        return self.inner.secure_aggregation

    def privacy_report(self) -> dict[str, dict[str, float]]:
        """Per site, what RoundRecord.privacy holds: epsilon and delta spent so far, and the budget."""
        return {site: budget.record() for site, budget in sorted(self.budgets.items())}
