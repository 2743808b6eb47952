"""The in-process engine's transport: every site is a local `Site` object, reached by a direct call.

The round loop (federation/round_loop.py) asks it to train and validate; what only
a process holding every site can do happens here: train several sites at once on
model replicas (federation/concurrent.py), check the participation deadline when
a site's training returns (a Python call cannot be pre-empted), and surface the
error when every site crashed (in one process that is a bug to show, not a
consortium to wait for).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import lightning as L

from federation.concurrent import ReplicaPool
from federation.evaluation import evaluate
from federation.participation import Participation
from federation.privacy.accountant import BudgetExhausted
from federation.round_record import FAILED, SKIPPED, Cause, RoundRecord, SiteOutcome
from federation.site import Site, training_seed
from federation.state import StateDict, set_state
from federation.update import ModelUpdate

log = logging.getLogger(__name__)


class LocalTransport:
    updates_stay_at_sites = False  # in one process the engine holds every update (SecureFedAvg runs its protocol inside `combine`)

    def __init__(self, sites: list[Site], module: L.LightningModule, local_limits: dict, seed: int, device: str,
                 participation: Participation, clock: Callable[[], float] = time.perf_counter, concurrent_sites: int = 1):
        self.site_objects, self.sites = list(sites), tuple(s.name for s in sites)
        self.module, self.local_limits, self.seed, self.device = module, dict(local_limits), seed, device
        self.participation, self.clock = participation, clock
        self.replicas = ReplicaPool(module, concurrent_sites, device)
        self.crashes: list[Exception] = []

    def open_round(self, round_: int) -> None:
        self.crashes = []

    def train(self, round_: int, state: StateDict, sites: list[str], objective: dict, outcomes: dict[str, SiteOutcome]) -> list[ModelUpdate]:
        indices = [self.sites.index(site) for site in sites]
        results = self.replicas.run(indices, lambda i, module: self._train_site(i, module, round_, state, objective, outcomes[self.sites[i]]))
        self.crashes += [crash for _, crash in results if crash is not None]
        return [update for update, _ in results if update is not None]

    def protocol_sites(self, round_, adverts, outcomes):
        raise TypeError("in process, updates never stay at the sites")

    def validate(self, round_: int, state: StateDict, outcomes: dict[str, SiteOutcome]) -> None:
        """The candidate on every site's validation split, as each site runs it (FedBN: its own norms)."""
        for site in self.site_objects:
            set_state(self.module, site.personalise(state))
            loader = site.loader("val")
            # n_patients lets the promotion rule tell a real drop from the noise of a small validation split
            outcomes[site.name].val_metrics = evaluate(self.module.model, loader, self.device) | {"n_patients": len(loader.dataset)}
        set_state(self.module, state)

    def privacy_spent(self) -> dict[str, dict[str, float]]:
        """DP-SGD budgets kept at the sites (a site object without DP, e.g. a test double, has none)."""
        return {s.name: s.privacy.budget.record() for s in self.site_objects if getattr(s, "privacy", None) is not None}

    def short_round(self, round_: int) -> None:
        if self.crashes and len(self.crashes) == len(self.sites):
            raise RuntimeError(f"round {round_}: every site crashed; the first error follows") from self.crashes[0]

    def close_round(self, record: RoundRecord, seconds: dict[str, float]) -> None:
        """Nothing travels, so nothing to add."""

    def _train_site(self, index: int, module: L.LightningModule, round_: int, state: StateDict, objective: dict, outcome: SiteOutcome):
        """Train one site on `module` (the engine's, or a replica); its outcome says whether it answered in time.

        Returns the update (or None) and the crash (or None).
        """
        site = self.site_objects[index]
        started = self.clock()
        try:
            update = site.train(module, state, self.local_limits, round_, seed=training_seed(self.seed, round_, index), objective=objective)
        except BudgetExhausted as spent:  # the site stops contributing, and says so
            outcome.mark(SKIPPED, Cause.PRIVACY_BUDGET, str(spent))
            log.warning("round %d: site %r %s", round_, site.name, spent)
            return None, None
        except Exception as error:  # a crashing site must not stop the consortium's round
            log.warning("round %d: site %r crashed: %s: %s", round_, site.name, type(error).__name__, error)
            outcome.mark(FAILED, Cause.CRASHED, f"crashed: {type(error).__name__}: {error}")
            return None, error
        seconds = self.clock() - started
        outcome.n_samples, outcome.sample_counts = update.n_samples, dict(update.sample_counts)
        outcome.update_norm, outcome.train_metrics = update.norm(), dict(update.metrics)
        if self.participation.missed_deadline(seconds):
            outcome.mark(FAILED, Cause.MISSED_DEADLINE, f"missed the deadline: trained for {seconds:.1f} s, deadline {self.participation.deadline_s:g} s")
            log.warning("round %d: site %r %s", round_, site.name, outcome.reason)
            return None, None
        return update, None
