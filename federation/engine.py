"""The in-process federation engine: every site in one process, rounds run sequentially.

The embedded default runtime for research and sweeps. Each round: the sampled
sites train the current global model on their own data and return ModelUpdates;
the validator refuses broken or outlying updates (and says why); the strategy
aggregates the rest; the candidate is validated on every site's val split; the
round's observers (ledger, registry, promotion rule) see the RoundRecord and may
refuse the candidate, in which case the previous global model stays.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import lightning as L
from tqdm.auto import tqdm

from federation.concurrent import ReplicaPool
from federation.evaluation import evaluate
from federation.participation import Participation
from federation.privacy.accountant import BudgetExhausted
from federation.privacy.site_dp import privacy_refusal
from federation.round_record import (
    ACCEPTED,
    FAILED,
    REJECTED,
    ROUND_ACCEPTED,
    ROUND_FAILED,
    SKIPPED,
    RoundObserver,
    RoundRecord,
    SiteOutcome,
)
from federation.site import Site
from federation.state import StateDict, get_state, set_state, trainable_keys
from federation.strategies.base import Strategy
from federation.update import ModelUpdate
from federation.validation import UpdateValidator

log = logging.getLogger(__name__)


@dataclass
class FederationResult:
    global_state: StateDict
    history: list[dict] = field(default_factory=list)
    """One row per round and site: round, site, status, reason, n_train, update norm, train loss, val metrics of the new global model."""
    records: list[RoundRecord] = field(default_factory=list)


class InProcessEngine:
    def __init__(
        self,
        sites: list[Site],
        module: L.LightningModule,
        strategy: Strategy,
        rounds: int,
        local_limits: dict,
        seed: int,
        device: str = "cpu",
        participation: Participation | None = None,
        validator: UpdateValidator | None = None,
        observers: Sequence[RoundObserver] = (),
        eligible: Callable[[int], set[str]] | None = None,
        findings: Callable[..., dict] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        concurrent_sites: int = 1,
    ):
        """`local_limits`: Lightning Trainer kwargs bounding one site's local training per round.

        `eligible(round)`: the sites that may take part in that round (governance: members
        who have joined and not left); all sites when None. `findings(updates, strategy,
        previous_state)`: what monitors learn from the accepted updates themselves (anomaly
        flags, contributions), put into `record.extra` before the observers run. `clock`:
        seconds, for the participation deadline (tests pass a simulated one).
        `concurrent_sites`: how many sampled sites train at once, each on its own model
        replica and, on a GPU, its own CUDA stream (federation/concurrent.py); 1: in turn.
        """
        self.sites = sites
        self.module = module
        self.strategy = strategy
        self.rounds = rounds
        self.local_limits = dict(local_limits)
        self.seed = seed
        self.device = device
        self.participation = participation or Participation()
        self.participation.check(len(sites))
        self.validator = validator or UpdateValidator()
        self.observers = list(observers)
        self.eligible = eligible
        self.findings = findings
        self.clock = clock
        self.replicas = ReplicaPool(module, concurrent_sites, device)

    def run(self, progress: bool = True) -> FederationResult:
        state = get_state(self.module, trainable_keys(self.module))
        self.strategy.set_parameter_keys(n for n, p in self.module.named_parameters() if p.requires_grad)
        result = FederationResult(state)
        bar = tqdm(range(1, self.rounds + 1), desc="federated rounds", unit="round", disable=not progress)
        for round_ in bar:
            record = self.run_round(round_, state)
            state = record.global_state
            result.records.append(record)
            result.history.extend(history_rows(record, {s.name: s.n_train for s in self.sites}))
            bar.set_postfix(val_acc=_mean(o.val_metrics.get("accuracy", float("nan")) for o in record.outcomes), sites=len(record.participants()))
        result.global_state = state
        return result

    def run_round(self, round_: int, state: StateDict) -> RoundRecord:
        """One round from `state`: collect, screen, aggregate, validate, let observers decide."""
        outcomes = {s.name: SiteOutcome(s.name, SKIPPED, "not sampled this round") for s in self.sites}
        accepted, crashes = self._collect(round_, state, outcomes)
        snapshot = copy.deepcopy(self.strategy)  # restored if the round is refused: FedOpt moments, SCAFFOLD controls
        if len(accepted) >= self.participation.min_sites:
            record = RoundRecord(round_, [], state, self.strategy.aggregate(state, accepted))
            if left_out := getattr(self.strategy, "round_findings", dict)():
                record.extra["aggregation"] = left_out  # before monitors re-run combine (leave-one-out)
        elif len(crashes) == len(self.sites):
            # in one process, every site of the consortium failing is a bug to show, not a consortium to wait for
            raise RuntimeError(f"round {round_}: every site crashed; the first error follows") from crashes[0]
        else:
            reason = f"{len(accepted)} usable update(s), fewer than participation.min_sites={self.participation.min_sites}"
            log.warning("round %d failed: %s", round_, reason)
            record = RoundRecord(round_, [], state, state, ROUND_FAILED, reason)
        self._validate(record.global_state, outcomes)
        record.outcomes = [outcomes[s.name] for s in self.sites]
        record.privacy = self._privacy_spent()
        if self.findings and record.decision == ROUND_ACCEPTED:
            record.extra |= self.findings(accepted, strategy=self.strategy, previous_state=state)
        for observer in self.observers:
            observer.on_round(record)
        if record.decision != ROUND_ACCEPTED and record.global_state is not state:
            self.strategy = snapshot
            record.global_state = state
        set_state(self.module, record.global_state)
        return record

    def _collect(self, round_: int, state: StateDict, outcomes: dict[str, SiteOutcome]) -> tuple[list[ModelUpdate], list[Exception]]:
        """Ask sampled sites to train (retrying with untried sites while short of the minimum); the accepted updates and any crashes."""
        accepted, crashes = [], []
        allowed = self.eligible(round_) if self.eligible else {s.name for s in self.sites}
        tried = {i for i, s in enumerate(self.sites) if s.name not in allowed}
        for i in tried:
            outcomes[self.sites[i].name].reason = "not an active member of the consortium this round"
        objective = self.strategy.local_objective()
        for attempt in range(self.participation.retries + 1):
            untried = [i for i in range(len(self.sites)) if i not in tried]
            if not untried or len(accepted) >= self.participation.min_sites:
                break
            chosen = [untried[j] for j in self.participation.sample(len(untried), round_, attempt, self.seed)]
            tried.update(chosen)
            updates = []
            for update, crash in self.replicas.run(chosen, lambda i, module: self._train_site(i, module, round_, state, objective, outcomes)):
                updates += [update] if update else []
                crashes += [crash] if crash else []
            screened, rejected = self.validator.screen(updates, state)
            for site, reason in rejected.items():
                log.warning("round %d: update from site %r rejected: %s", round_, site, reason)
                outcomes[site].status, outcomes[site].reason = REJECTED, reason
            accepted += screened
        return accepted, crashes

    def _train_site(self, index: int, module: L.LightningModule, round_: int, state: StateDict, objective: dict, outcomes: dict[str, SiteOutcome]):
        """Train one site on `module` (the engine's, or a replica); its outcome says whether it answered in time.

        Returns the update (or None) and the crash (or None).
        """
        site = self.sites[index]
        outcome = outcomes[site.name]
        started = self.clock()
        refusal = privacy_refusal(self.strategy, site.name)
        if refusal:
            outcome.reason = refusal
            log.warning("round %d: site %r does not take part: %s", round_, site.name, refusal)
            return None, None
        try:
            update = site.train(module, state, self.local_limits, round_, seed=self.seed + 1000 * round_ + index, objective=objective)
        except BudgetExhausted as spent:  # the site stops contributing, and says so
            outcome.reason = str(spent)
            log.warning("round %d: site %r %s", round_, site.name, spent)
            return None, None
        except Exception as error:  # a crashing site must not stop the consortium's round
            log.warning("round %d: site %r crashed: %s: %s", round_, site.name, type(error).__name__, error)
            outcome.status, outcome.reason = FAILED, f"crashed: {type(error).__name__}: {error}"
            return None, error
        seconds = self.clock() - started
        outcome.n_samples, outcome.sample_counts = update.n_samples, dict(update.sample_counts)
        outcome.update_norm, outcome.train_metrics = update.norm(), dict(update.metrics)
        if self.participation.missed_deadline(seconds):
            outcome.status = FAILED
            outcome.reason = f"missed the deadline: trained for {seconds:.1f} s, deadline {self.participation.deadline_s:g} s"
            log.warning("round %d: site %r %s", round_, site.name, outcome.reason)
            return None, None
        outcome.status, outcome.reason = ACCEPTED, ""
        return update, None

    def _privacy_spent(self) -> dict[str, dict[str, float]]:
        """Per site, privacy spent so far: DP-SGD budgets kept at the sites, or the site-level DP wrapper's."""
        spent = {s.name: s.privacy.budget.record() for s in self.sites if getattr(s, "privacy", None) is not None}
        report = getattr(self.strategy, "privacy_report", None)
        return spent | (report() if report else {})

    def _validate(self, state: StateDict, outcomes: dict[str, SiteOutcome]) -> None:
        """The candidate global model on every site's validation split, as each site runs it (FedBN: its own norms)."""
        for site in self.sites:
            set_state(self.module, site.personalise(state))
            loader = site.loader("val")
            # n_patients lets the promotion rule tell a real drop from the noise of a small validation split
            outcomes[site.name].val_metrics = evaluate(self.module.model, loader, self.device) | {"n_patients": len(loader.dataset)}
        set_state(self.module, state)


def history_rows(record: RoundRecord, n_train: dict[str, int]) -> list[dict]:
    """metrics.csv rows: one per site of the round."""
    return [
        {"round": record.round, "site": o.site, "status": o.status, "reason": o.reason, "decision": record.decision,
         "n_train": n_train[o.site], "update_norm": o.update_norm, **o.train_metrics}
        | {f"val_{k}": v for k, v in o.val_metrics.items()}
        for o in record.outcomes
    ]


def _mean(values) -> float:
    values = [v for v in values if v == v]
    return round(sum(values) / len(values), 3) if values else float("nan")
