"""A site's differential-privacy budget, kept by Opacus's RDP accountant.

Rényi DP composes additively over steps of the (subsampled) Gaussian mechanism
(Mironov 2017, "Rényi Differential Privacy"; Mironov, Talwar & Zhang 2019 for
Poisson subsampling), and converts to (epsilon, delta)-DP at the end. The same
class serves sample-level DP-SGD (one step per optimizer step, sampling rate =
batch / site size) and site-level DP (one step per round, sampling rate = the
fraction of sites per round). `can_spend` asks before anything is trained, so a
site that would overrun its budget stops contributing instead of overrunning it.
"""
from __future__ import annotations

import math

from opacus.accountants import RDPAccountant

EXHAUSTED = (
    "site {site!r} stops contributing: {steps} more step(s) at noise multiplier {sigma:.3g} and sampling rate {rate:.3g} "
    "would raise its privacy loss from epsilon={spent:.3f} to {after:.3f}, over its budget of epsilon={budget:g} (delta={delta:g})"
)


class BudgetExhausted(RuntimeError):
    """Raised instead of training when a site's next contribution would exceed its privacy budget."""


class PrivacyBudget:
    def __init__(self, epsilon: float, delta: float, site: str = ""):
        """`epsilon`: the most this site will spend over the whole federation (math.inf: account, never refuse)."""
        if epsilon <= 0 or not 0 < delta < 1:
            raise ValueError(f"a privacy budget needs epsilon > 0 and 0 < delta < 1, got epsilon={epsilon}, delta={delta}")
        self.epsilon, self.delta, self.site = float(epsilon), float(delta), site
        self.accountant = RDPAccountant()

    def spent(self) -> tuple[float, float]:
        """(epsilon, delta) spent so far; (0, 0) before the first step."""
        if not self.accountant.history:
            return 0.0, 0.0
        return _epsilon(self.accountant.history, self.delta), self.delta

    def epsilon_after(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> float:
        return _epsilon([*self.accountant.history, (noise_multiplier, sample_rate, steps)], self.delta)

    def can_spend(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> bool:
        return self.epsilon_after(noise_multiplier, sample_rate, steps) <= self.epsilon

    def spend(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> tuple[float, float]:
        """Record `steps` steps of the mechanism; refuses (BudgetExhausted) rather than overrun."""
        self.check(noise_multiplier, sample_rate, steps)
        for _ in range(steps):
            self.accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
        return self.spent()

    def check(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        if not self.can_spend(noise_multiplier, sample_rate, steps):
            raise BudgetExhausted(self.refusal(noise_multiplier, sample_rate, steps))

    def refusal(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> str:
        after = self.epsilon_after(noise_multiplier, sample_rate, steps)
        return EXHAUSTED.format(site=self.site, steps=steps, sigma=noise_multiplier, rate=sample_rate,
                                spent=self.spent()[0], after=after, budget=self.epsilon, delta=self.delta)

    def record(self) -> dict[str, float]:
        """What RoundRecord.privacy holds for this site."""
        epsilon, _ = self.spent()
        return {"epsilon": epsilon, "delta": self.delta, "epsilon_budget": self.epsilon}

    def state_dict(self) -> dict:
        return {"epsilon": self.epsilon, "delta": self.delta, "site": self.site, "history": list(self.accountant.history)}

    @classmethod
    def from_state_dict(cls, state: dict) -> PrivacyBudget:
        budget = cls(state["epsilon"], state["delta"], state.get("site", ""))
        budget.accountant.history = [tuple(h) for h in state["history"]]
        return budget


def _epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    if any(sigma == 0 for sigma, _, steps in history if steps > 0):
        return math.inf  # no noise: no guarantee
    accountant = RDPAccountant()
    accountant.history = list(history)
    return accountant.get_epsilon(delta)
