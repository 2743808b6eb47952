"""A private run's plan, checked before anything trains: each refusal one line naming the setting.

- `privacy.epsilon`: the planned rounds must be able to stay within it. Under the RDP
  accountant, epsilon has a floor however much noise is added (the conversion from
  Rényi DP keeps a log(1/delta) / (alpha - 1) term; Mironov 2017), so a budget below
  it for the planned steps would otherwise fail deep inside Opacus's noise search.
- `privacy.delta`: at or above 1/n, a mechanism that publishes one of n patients'
  records in full is (0, delta)-DP, so the guarantee says nothing (Dwork & Roth 2014,
  "The Algorithmic Foundations of Differential Privacy", section 2.3). The unit is a
  patient under DP-SGD (n = the smallest site's training patients) and a site under
  site-level DP (n = the sites).
- `privacy.freeze`: must leave something for DP-SGD to train (public_parts.check_trainable).
"""
from __future__ import annotations

from collections.abc import Mapping

from federation.privacy.dp_sgd import calibrate_noise
from federation.settings import ConfigError


def noise_for_plan(epsilon: float, delta: float, sample_rate: float, steps: int, plan: str) -> float:
    """The noise multiplier that spends `epsilon` over `steps` (0 for an infinite budget); refuses a budget no noise meets."""
    try:
        return calibrate_noise(epsilon, delta, sample_rate, steps)
    except ValueError:
        raise ConfigError(
            "privacy.epsilon", epsilon,
            f"{plan} at sampling rate {sample_rate:.3g}, which no noise multiplier keeps "
            f"within this epsilon at delta={delta:g}; raise privacy.epsilon, or plan fewer rounds or local epochs",
        ) from None


def check_delta(delta: float, unit_counts: Mapping[str, int], unit: str) -> None:
    """Refuse delta >= 1 / (the smallest count of protected units): `unit_counts` maps a site (or 'sites') to its count."""
    name, smallest = min(unit_counts.items(), key=lambda item: item[1])
    if smallest > 0 and delta >= 1.0 / smallest:
        raise ConfigError("privacy.delta", delta, f"must be below 1/{smallest} = {1.0 / smallest:.3g}: {name} has {smallest} {unit}, "
                          "and a delta that large allows one of them to be published in full")
