"""The promotion rule: a round's model replaces the current registry version only if it is not worse.

Compared per site on the held-out validation metric, against the metrics recorded
in the current version's card: the round is rejected when the mean over sites
drops by more than `max_drop_overall`, or any one site's by more than
`max_drop_site` (so a model that helps the big sites at a small site's expense is
refused). The first round after the initial model has nothing to compare with and
passes.

Small sites validate on a handful of patients, where one patient moves accuracy by
0.05 and chance alone moves it by more than `max_drop_site`. For metrics that are
a share of patients (accuracy, top-k accuracy) a drop therefore counts only if it
also exceeds `noise_z` standard errors of the difference of two such shares on the
site's `n_patients` (binomial, sqrt(2 p (1 - p) / n), p the mean of the two), and
the overall drop likewise over all sites. At 20 validation patients and accuracy
0.8 that tolerates about 0.21 at z = 1.64; at 500 patients, about 0.04, so
`max_drop_site` governs. The gate also reserves the number the accepted model will get, so the
ledger entry can name it before the registry writes it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from federation.governance.decisions import refuse
from federation.governance.registry import Registry
from federation.round_record import ROUND_ACCEPTED, ROUND_REJECTED, RoundRecord

SiteMetrics = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class PromotionRule:
    metric: str = "accuracy"
    higher_is_better: bool = True
    max_drop_overall: float = 0.05
    max_drop_site: float = 0.10
    noise_z: float = 0.0
    """Standard errors a drop of a share-of-patients metric must also exceed (see the module docstring); 0: off."""
    enabled: bool = True
    """False: every candidate passes (the gate still records versions); for runs that reproduce a published protocol."""

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> PromotionRule:
        keys = ("metric", "higher_is_better", "max_drop_overall", "max_drop_site", "noise_z", "enabled")
        return cls(**{k: cfg[k] for k in keys if k in cfg})

    def drop(self, current: float, candidate: float) -> float:
        return current - candidate if self.higher_is_better else candidate - current

    def verdict(self, current: SiteMetrics, candidate: SiteMetrics) -> str | None:
        """Why the candidate is refused, or None if it may be promoted (sites without a finite metric in both are skipped)."""
        if not self.enabled:
            return None
        pairs = {s: (current[s].get(self.metric), candidate[s].get(self.metric)) for s in candidate if s in current}
        pairs = {s: (float(a), float(b)) for s, (a, b) in pairs.items() if _finite(a) and _finite(b)}
        if not pairs:
            return None
        variances = {s: self._variance(before, after, candidate[s].get("n_patients")) for s, (before, after) in pairs.items()}
        for site, (before, after) in sorted(pairs.items()):
            allowed = max(self.max_drop_site, self.noise_z * math.sqrt(variances[site]))
            if self.drop(before, after) > allowed:
                return f"{self.metric} at site {site!r} went from {before:.3f} to {after:.3f}, a drop above {allowed:.3f}" + self._why(allowed, self.max_drop_site, "max_drop_site")
        before = sum(a for a, _ in pairs.values()) / len(pairs)
        after = sum(b for _, b in pairs.values()) / len(pairs)
        allowed = max(self.max_drop_overall, self.noise_z * math.sqrt(sum(variances.values())) / len(pairs))
        if self.drop(before, after) > allowed:
            return f"mean {self.metric} over sites went from {before:.3f} to {after:.3f}, a drop above {allowed:.3f}" + self._why(allowed, self.max_drop_overall, "max_drop_overall")
        return None

    def _variance(self, before: float, after: float, n_patients: Any) -> float:
        """Binomial variance of the difference of two shares on n patients; 0 where it does not apply."""
        if not self.noise_z or not _is_share(self.metric) or not _finite(n_patients) or float(n_patients) < 1:
            return 0.0
        p = min(max((before + after) / 2, 0.0), 1.0)
        return 2 * p * (1 - p) / float(n_patients)

    def _why(self, allowed: float, floor: float, name: str) -> str:
        return f" ({name}={floor})" if allowed == floor else f" ({self.noise_z} standard errors of the validation patients' noise)"


def _is_share(metric: str) -> bool:
    """Metrics that are a share of patients: accuracy, top3_accuracy, ..."""
    return metric == "accuracy" or metric.endswith("_accuracy")


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


class PromotionGate:
    """Observer: applies the rule against the registry's current version; reserves the version number."""

    def __init__(self, registry: Registry, rule: PromotionRule):
        self.registry = registry
        self.rule = rule

    def on_round(self, record: RoundRecord) -> None:
        current = self.registry.current()
        record.extra["registry"] = {"parent_version": 0 if current is None else current}
        if record.decision != ROUND_ACCEPTED:
            return
        baseline = self.registry.card(current).get("metrics", {}).get("sites", {}) if current is not None else {}
        candidate = {o.site: o.val_metrics for o in record.outcomes if o.val_metrics}
        reason = self.rule.verdict(baseline, candidate)
        if reason:
            refuse(record, ROUND_REJECTED, f"promotion rule: {reason}")
            return
        record.extra["registry"]["version"] = self.registry.next_version() if self.registry.versions() else 1
