"""One federated round, whatever carries the messages: the skeleton both runtimes run.

sample (participation, governance's members) -> train the sampled sites through a
transport -> screen the updates (validator) -> aggregate (the strategy, or secure
aggregation where the updates stay at the sites) -> validate the candidate at the
sites -> observers decide (ledger, registry, promotion rule) -> commit, or roll back
the global model and the strategy's own state.

The two runtimes differ only in their transport: the in-process engine calls local
`Site` objects (federation/local_transport.py), the deployed coordinator sends
Flower messages (federation/flower/transport.py). Keeping one loop keeps their
sampling, refusals, aggregation order, privacy checks and records identical, so a
deployment ends where the in-process engine ends and writes the same ledger.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from federation.participation import Participation
from federation.privacy.messages import KeyAdvert
from federation.privacy.secagg import ProtocolSites, SecAggError
from federation.round_record import (
    ACCEPTED,
    NOT_SAMPLED,
    REJECTED,
    ROUND_ACCEPTED,
    ROUND_FAILED,
    SKIPPED,
    Cause,
    RoundObserver,
    RoundRecord,
    SiteOutcome,
)
from federation.state import StateDict
from federation.strategies.base import Strategy
from federation.update import ModelUpdate
from federation.validation import UpdateValidator

log = logging.getLogger(__name__)

Answer = ModelUpdate | KeyAdvert
"""A usable train reply: the update, or (secure aggregation over messages) the key advert of an update kept at its site."""
NOT_A_MEMBER = "not an active member of the consortium this round"


class Transport(Protocol):
    """How the round reaches its sites. Each method fills the outcomes of the sites it could not use, with the reason."""

    sites: tuple[str, ...]
    """Site names in consortium order (a site's index fixes its training seed and the aggregation order)."""
    updates_stay_at_sites: bool
    """True when train replies are key adverts and the aggregate comes from `protocol_sites` (secure aggregation)."""

    def open_round(self, round_: int) -> None:
        """Before sampling: e.g. wait until enough sites are connected."""

    def train(self, round_: int, state: StateDict, sites: list[str], objective: dict, outcomes: dict[str, SiteOutcome]) -> list[Answer]:
        """Ask `sites` to train from `state`; the usable answers, each with its outcome's counts and metrics set."""

    def protocol_sites(self, round_: int, adverts: list[KeyAdvert], outcomes: dict[str, SiteOutcome]) -> ProtocolSites:
        """The advertising sites as secure aggregation reaches them (only when `updates_stay_at_sites`)."""

    def validate(self, round_: int, state: StateDict, outcomes: dict[str, SiteOutcome]) -> None:
        """The candidate on each site's validation split, into the outcomes' `val_metrics`."""

    def privacy_spent(self) -> dict[str, dict[str, float]]:
        """Per site, what the sites' own DP (DP-SGD) has spent so far."""

    def short_round(self, round_: int) -> None:
        """Told that the round has too few usable updates, before it is recorded as failed (may raise instead)."""

    def close_round(self, record: RoundRecord, seconds: dict[str, float]) -> None:
        """Add what only this transport knows (bytes moved, phase times) to the record, before the observers see it."""


class RoundLoop:
    def __init__(self, transport: Transport, strategy: Strategy, participation: Participation, validator: UpdateValidator, seed: int,
                 observers: Sequence[RoundObserver] = (), eligible: Callable[[int], set[str]] | None = None, findings: Callable[..., dict] | None = None):
        """`eligible(round)`: the sites that may take part (governance: active members); all when None.
        `findings(updates, strategy, previous_state)`: what monitors learn from the accepted updates, into `record.extra`."""
        participation.check(len(transport.sites))
        self.transport, self.strategy, self.participation, self.validator, self.seed = transport, strategy, participation, validator, seed
        self.observers, self.eligible, self.findings = list(observers), eligible, findings

    def run_round(self, round_: int, state: StateDict) -> RoundRecord:
        """One round from `state`: collect, screen, aggregate, validate, let observers decide, roll back if refused."""
        outcomes = {site: SiteOutcome(site, SKIPPED, NOT_SAMPLED, cause=Cause.NOT_SAMPLED) for site in self.transport.sites}
        self.transport.open_round(round_)
        seconds: dict[str, float] = {}
        with timed(seconds, "train"):
            accepted = sorted(self.collect(round_, state, outcomes), key=lambda a: self.transport.sites.index(a.site))
        snapshot = copy.deepcopy(self.strategy)  # restored if the round is refused: FedOpt moments, SCAFFOLD controls
        record = self.aggregate(round_, state, accepted, outcomes, seconds)
        with timed(seconds, "validate"):
            self.transport.validate(round_, record.global_state, outcomes)
        record.outcomes = [outcomes[site] for site in self.transport.sites]
        record.privacy = self.transport.privacy_spent() | self.strategy.privacy_report()
        self.transport.close_round(record, seconds)
        if self.findings and record.decision == ROUND_ACCEPTED:
            record.extra |= self.findings(accepted, strategy=self.strategy, previous_state=state)
        for observer in self.observers:
            observer.on_round(record)
        if record.decision != ROUND_ACCEPTED and record.global_state is not state:
            self.strategy, record.global_state = snapshot, state
        return record

    def collect(self, round_: int, state: StateDict, outcomes: dict[str, SiteOutcome]) -> list[Answer]:
        """Ask sampled sites to train (retrying with untried sites while short of the minimum); the screened answers."""
        sites = self.transport.sites
        allowed = self.eligible(round_) if self.eligible else set(sites)
        tried = {i for i, site in enumerate(sites) if site not in allowed}
        for i in tried:
            outcomes[sites[i]].mark(SKIPPED, Cause.NOT_A_MEMBER, NOT_A_MEMBER)
        objective = self.strategy.local_objective()
        accepted: list[Answer] = []
        for attempt in range(self.participation.retries + 1):
            untried = [i for i in range(len(sites)) if i not in tried]
            if not untried or len(accepted) >= self.participation.min_sites:
                break
            chosen = [untried[j] for j in self.participation.sample(len(untried), round_, attempt, self.seed)]
            tried.update(chosen)
            asked = [sites[i] for i in chosen if not self._refused(round_, outcomes[sites[i]])]
            accepted += self._screen(round_, self.transport.train(round_, state, asked, objective, outcomes), state, outcomes)
        return accepted

    def aggregate(self, round_: int, state: StateDict, accepted: list[Answer], outcomes: dict[str, SiteOutcome], seconds: dict[str, float]) -> RoundRecord:
        """The round's record with its candidate model; a failed round (too few updates, secure aggregation broke) keeps `state`."""
        if len(accepted) < self.participation.min_sites:
            self.transport.short_round(round_)
            return failed(round_, state, f"{len(accepted)} usable update(s), fewer than participation.min_sites={self.participation.min_sites}")
        if self.transport.updates_stay_at_sites:
            with timed(seconds, "secure_aggregation"):
                return self._aggregate_securely(round_, state, accepted, outcomes)
        record = RoundRecord(round_, [], state, self.strategy.aggregate(state, accepted))
        if left_out := self.strategy.round_findings():
            record.extra["aggregation"] = left_out  # before monitors re-run combine (leave-one-out)
        return record

    def _aggregate_securely(self, round_: int, state: StateDict, adverts: list[KeyAdvert], outcomes: dict[str, SiteOutcome]) -> RoundRecord:
        """Through the secure-aggregation steps; a site that drops out is noted in its outcome, too many fail the round."""
        try:
            deltas = self.strategy.combine_secure(self.transport.protocol_sites(round_, adverts, outcomes), round_)
        except SecAggError as err:
            return failed(round_, state, str(err))
        return RoundRecord(round_, [], state, self.strategy.apply(state, deltas))

    def _refused(self, round_: int, outcome: SiteOutcome) -> bool:
        """Site-level DP: a site whose next contribution would overrun its budget is not asked."""
        refusal = self.strategy.privacy_refusal(outcome.site)
        if refusal is None:
            return False
        outcome.mark(SKIPPED, Cause.PRIVACY_BUDGET, refusal)
        log.warning("round %d: site %r does not take part: %s", round_, outcome.site, refusal)
        return True

    def _screen(self, round_: int, answers: list[Answer], state: StateDict, outcomes: dict[str, SiteOutcome]) -> list[Answer]:
        """The validator's verdict on the updates; key adverts pass (the coordinator never sees those updates)."""
        screened, rejected = (answers, {}) if self.transport.updates_stay_at_sites else self.validator.screen(answers, state)
        for site, reason in rejected.items():
            log.warning("round %d: update from site %r rejected: %s", round_, site, reason)
            outcomes[site].mark(REJECTED, Cause.SCREENED_OUT, reason)
        for answer in screened:  # an advert's site may still drop out of the secure-aggregation steps
            outcomes[answer.site].mark(ACCEPTED, None, "")
        return screened


def failed(round_: int, state: StateDict, reason: str) -> RoundRecord:
    log.warning("round %d failed: %s", round_, reason)
    return RoundRecord(round_, [], state, state, ROUND_FAILED, reason)


@contextmanager
def timed(seconds: dict[str, float], phase: str) -> Iterator[None]:
    """How long a phase took, into `seconds` (the deployment records it per round)."""
    started = time.monotonic()
    try:
        yield
    finally:
        seconds[phase] = time.monotonic() - started
