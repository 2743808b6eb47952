"""What happened in one federated round: who took part, what was refused and why, what the round decided.

The round loop (federation/round_loop.py, for the in-process engine and the Flower
coordinator alike) fills one RoundRecord per round and hands it to the round's
observers (ledger, registry, monitoring, dashboard). It carries aggregates only:
sample counts, update norms and metrics, never patient data.

Statuses, decisions and causes are typed values that code compares; `reason` is
the same fact in words, for people. Each type is a `str` too, so run folders
(rounds.json, ledger entries, metrics.csv) keep the words they always held.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from federation.state import StateDict


class Word(str, Enum):
    """An Enum member that is its word wherever it is printed, written or compared with a string."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(str(self), spec)


class SiteStatus(Word):
    """What became of one site in one round."""

    ACCEPTED = "accepted"  # its update went into the aggregate
    REJECTED = "rejected"  # it sent an update the validator (or the reply check) refused
    SKIPPED = "skipped"    # not asked, or it declined (Cause says which)
    FAILED = "failed"      # crashed, missed the deadline, no usable answer


class RoundDecision(Word):
    """What the round decided about the new global model."""

    ACCEPTED = "accepted"        # the aggregate became the global model
    REJECTED = "rejected"        # a promotion rule refused it; the previous global model stays
    ROLLED_BACK = "rolled_back"  # an earlier version was restored
    FAILED = "failed"            # fewer sites than the minimum answered; nothing changed


class Cause(Word):
    """Why a site did not contribute, as a type (the outcome's `reason` says it in words)."""

    NOT_SAMPLED = "not_sampled"                # skipped: participation did not draw it
    NOT_A_MEMBER = "not_a_member"              # skipped: governance says it is not an active member this round
    PRIVACY_BUDGET = "privacy_budget"          # skipped: one more round would overrun its privacy budget
    CRASHED = "crashed"                        # failed: its training raised
    MISSED_DEADLINE = "missed_deadline"        # failed: it trained for longer than participation.deadline_s
    NOT_CONNECTED = "not_connected"            # failed: no node serves it
    NO_ANSWER = "no_answer"                    # failed: no reply in time, or an error reply
    MALFORMED = "malformed"                    # rejected: its reply could not be read as an update for this round
    SCREENED_OUT = "screened_out"              # rejected: the update validator refused it
    SECURE_AGGREGATION = "secure_aggregation"  # failed: it dropped out of the secure-aggregation steps


# The names the rest of the code base (and old imports) use.
ACCEPTED, REJECTED, SKIPPED, FAILED = SiteStatus.ACCEPTED, SiteStatus.REJECTED, SiteStatus.SKIPPED, SiteStatus.FAILED
SITE_STATUSES = tuple(SiteStatus)
ROUND_ACCEPTED, ROUND_REJECTED = RoundDecision.ACCEPTED, RoundDecision.REJECTED
ROUND_ROLLED_BACK, ROUND_FAILED = RoundDecision.ROLLED_BACK, RoundDecision.FAILED
ROUND_DECISIONS = tuple(RoundDecision)
NOT_SAMPLED = "not sampled this round"


@dataclass
class SiteOutcome:
    site: str
    status: SiteStatus
    reason: str = ""
    n_samples: int = 0
    sample_counts: dict[str, int] = field(default_factory=dict)
    update_norm: float = math.nan
    train_metrics: dict[str, float] = field(default_factory=dict)
    val_metrics: dict[str, float] = field(default_factory=dict)
    """The round's resulting global model on this site's validation split."""
    cause: Cause | None = None
    """Why it did not contribute (None: it did, or nothing is known); not written to run folders, `reason` is."""

    def __post_init__(self) -> None:
        try:
            self.status = SiteStatus(self.status)
        except ValueError:
            raise ValueError(f"site {self.site!r}: status {self.status!r} is not one of {tuple(s.value for s in SiteStatus)}") from None

    def mark(self, status: SiteStatus, cause: Cause | None, reason: str) -> None:
        """Set what became of the site, with its cause and the reason in words."""
        self.status, self.cause, self.reason = SiteStatus(status), cause, reason


@dataclass
class RoundRecord:
    round: int
    outcomes: list[SiteOutcome]
    previous_state: StateDict
    global_state: StateDict
    """The global model after this round's decision (equal to previous_state unless accepted)."""
    decision: RoundDecision = RoundDecision.ACCEPTED
    reason: str = ""
    privacy: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per site: privacy spent so far (e.g. {"epsilon": 1.2, "delta": 1e-5}), where DP is configured."""
    extra: dict = field(default_factory=dict)
    """Observers' findings for this round (drift, anomaly flags, contributions), keyed by observer."""

    def __post_init__(self) -> None:
        self.decision = RoundDecision(self.decision)

    def participants(self) -> list[str]:
        return [o.site for o in self.outcomes if o.status == ACCEPTED]

    def outcome(self, site: str) -> SiteOutcome:
        return next(o for o in self.outcomes if o.site == site)


class RoundObserver(Protocol):
    """Anything that watches rounds: ledger, registry, monitors. May change `record.decision` (a promotion rule)."""

    def on_round(self, record: RoundRecord) -> None: ...
