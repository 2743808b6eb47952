"""What happened in one federated round: who took part, what was refused and why, what the round decided.

The engine (in-process or Flower) fills one RoundRecord per round and hands it to
the round's observers (ledger, registry, monitoring, dashboard). It carries
aggregates only: sample counts, update norms and metrics, never patient data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from federation.state import StateDict

# What became of one site in one round.
ACCEPTED = "accepted"      # its update went into the aggregate
REJECTED = "rejected"      # it sent an update the validator refused (reason says why)
SKIPPED = "skipped"        # not sampled this round
FAILED = "failed"          # crashed, or missed the round's deadline
SITE_STATUSES = (ACCEPTED, REJECTED, SKIPPED, FAILED)

# What the round decided about the new global model.
ROUND_ACCEPTED = "accepted"        # the aggregate became the global model
ROUND_REJECTED = "rejected"        # a promotion rule refused it; the previous global model stays
ROUND_ROLLED_BACK = "rolled_back"  # an earlier version was restored
ROUND_FAILED = "failed"            # fewer sites than the minimum answered; nothing changed
ROUND_DECISIONS = (ROUND_ACCEPTED, ROUND_REJECTED, ROUND_ROLLED_BACK, ROUND_FAILED)


@dataclass
class SiteOutcome:
    site: str
    status: str
    reason: str = ""
    n_samples: int = 0
    sample_counts: dict[str, int] = field(default_factory=dict)
    update_norm: float = math.nan
    train_metrics: dict[str, float] = field(default_factory=dict)
    val_metrics: dict[str, float] = field(default_factory=dict)
    """The round's resulting global model on this site's validation split."""

    def __post_init__(self) -> None:
        if self.status not in SITE_STATUSES:
            raise ValueError(f"site {self.site!r}: status {self.status!r} is not one of {SITE_STATUSES}")


@dataclass
class RoundRecord:
    round: int
    outcomes: list[SiteOutcome]
    previous_state: StateDict
    global_state: StateDict
    """The global model after this round's decision (equal to previous_state unless accepted)."""
    decision: str = ROUND_ACCEPTED
    reason: str = ""
    privacy: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per site: privacy spent so far (e.g. {"epsilon": 1.2, "delta": 1e-5}), where DP is configured."""
    extra: dict = field(default_factory=dict)
    """Observers' findings for this round (drift, anomaly flags, contributions), keyed by observer."""

    def participants(self) -> list[str]:
        return [o.site for o in self.outcomes if o.status == ACCEPTED]

    def outcome(self, site: str) -> SiteOutcome:
        return next(o for o in self.outcomes if o.site == site)


class RoundObserver(Protocol):
    """Anything that watches rounds: ledger, registry, monitors. May change `record.decision` (a promotion rule)."""

    def on_round(self, record: RoundRecord) -> None: ...
