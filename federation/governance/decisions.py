"""How an observer refuses a round, so that the engine and the observers after it agree on what happened.

Refusing only sets the decision and the reason: `record.global_state` stays the
candidate (the ledger records its hash as the refused candidate's) and the engine,
seeing a decision other than "accepted", keeps `record.previous_state` and restores
its strategy's own state.
"""
from __future__ import annotations

from federation.round_record import ROUND_ACCEPTED, RoundDecision, RoundRecord


def refuse(record: RoundRecord, decision: RoundDecision, reason: str) -> None:
    """Set the decision and its reason; the first refusal wins, so a round keeps the first reason it was refused for."""
    if record.decision != ROUND_ACCEPTED:
        return
    record.decision = RoundDecision(decision)
    record.reason = reason


def committed_state(record: RoundRecord):
    """The global model after the round's decision: the candidate if accepted, else the previous one."""
    return record.global_state if record.decision == ROUND_ACCEPTED else record.previous_state
