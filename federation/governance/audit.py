"""The ledger's observer: one `round` entry per round, and the run's start, feedback and exit entries.

It runs after the monitors and the promotion gate, so the entry records the final
decision and every finding. It hands the entry's hash on (record.extra["ledger"])
for the registry's model card, which thereby points at the decision that made it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federation.governance.decisions import committed_state
from federation.governance.hashing import model_hash
from federation.governance.ledger import FEEDBACK, ROUND, RUN_START, SITE_EXIT, Ledger
from federation.round_record import ROUND_ACCEPTED, RoundRecord

OWN_KEYS = ("ledger", "registry")  # extra keys recorded as fields of their own, not findings
FEEDBACK_NOTE = "clinician-confirmed cases in each site's validation split"


def round_entry(record: RoundRecord) -> dict[str, Any]:
    """A round as the ledger keeps it: aggregates, hashes and decisions only."""
    registry = record.extra.get("registry", {})
    accepted = record.decision == ROUND_ACCEPTED
    return {
        "round": record.round,
        "decision": record.decision,
        "reason": record.reason,
        "participants": record.participants(),
        "sites": {
            o.site: {
                "status": o.status,
                "reason": o.reason,
                "n_samples": o.n_samples,
                "sample_counts": o.sample_counts,
                "update_norm": o.update_norm,
                "train_metrics": o.train_metrics,
                "val_metrics": o.val_metrics,
            }
            for o in record.outcomes
        },
        "previous_model": model_hash(record.previous_state),
        "model": model_hash(committed_state(record)),
        "candidate_model": model_hash(record.global_state),
        "parent_version": registry.get("parent_version"),
        "version": registry.get("version") if accepted else None,
        "privacy": record.privacy,
        "findings": {k: v for k, v in record.extra.items() if k not in OWN_KEYS},
    }


class LedgerWriter:
    def __init__(self, ledger: Ledger, start: Mapping[str, Any], feedback: Mapping[str, int], exit_mode: str = "restore", feedback_note: str = FEEDBACK_NOTE):
        """`start`: what the run_start entry records (members, rules); `feedback`: per site, the clinician cases in
        validation; `feedback_note`: what the feedback entry says about them (a deployment: why there are none)."""
        self.ledger = ledger
        self.start = dict(start)
        self.feedback = dict(feedback)
        self.exit_mode = exit_mode
        self.feedback_note = feedback_note
        self.started: dict[str, Any] | None = None

    def on_round(self, record: RoundRecord) -> None:
        if self.started is None:
            self.started = self.ledger.append(RUN_START, {**self.start, "first_round": record.round, "initial_model": model_hash(record.previous_state)})
            self.ledger.append(FEEDBACK, {"sites": self.feedback, "note": self.feedback_note})
        entry = self.ledger.append(ROUND, round_entry(record))
        for exit_ in record.extra.get("participation", {}).get("exits", []):
            self.ledger.append(SITE_EXIT, {**exit_, "round": record.round, "mode": self.exit_mode})
        record.extra["ledger"] = {"entry_hash": entry["hash"], "seq": entry["seq"], "run_start": self.started["hash"]}
