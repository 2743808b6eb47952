"""The in-process federation engine: every site in one process, rounds run sequentially.

The embedded default runtime for research and sweeps. It runs the round skeleton
(federation/round_loop.py) over local `Site` objects (federation/local_transport.py):
the sampled sites train the current global model on their own data and return
ModelUpdates; the validator refuses broken or outlying updates (and says why); the
strategy aggregates the rest; the candidate is validated on every site's val split;
the round's observers (ledger, registry, promotion rule) see the RoundRecord and may
refuse the candidate, in which case the previous global model stays.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import lightning as L
from tqdm.auto import tqdm

from federation.local_transport import LocalTransport
from federation.participation import Participation
from federation.round_loop import RoundLoop
from federation.round_record import RoundObserver, RoundRecord
from federation.site import Site
from federation.state import StateDict, get_state, set_state, trainable_keys
from federation.strategies.base import Strategy
from federation.validation import UpdateValidator


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
        self.sites, self.module, self.rounds, self.seed, self.device = sites, module, rounds, seed, device
        participation = participation or Participation()
        self.transport = LocalTransport(sites, module, local_limits, seed, device, participation, clock, concurrent_sites)
        self.loop = RoundLoop(self.transport, strategy, participation, validator or UpdateValidator(), seed, observers, eligible, findings)

    @property
    def strategy(self) -> Strategy:
        """The loop's strategy (replaced by its snapshot when a round is refused)."""
        return self.loop.strategy

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
        """One round from `state` (federation/round_loop.py); the module holds the round's global model afterwards."""
        record = self.loop.run_round(round_, state)
        set_state(self.module, record.global_state)
        return record


def history_rows(record: RoundRecord, n_train: dict[str, int]) -> list[dict]:
    """metrics.csv rows: one per site of the round."""
    return [
        {"round": record.round, "site": o.site, "status": str(o.status), "reason": o.reason, "decision": str(record.decision),
         "n_train": n_train[o.site], "update_norm": o.update_norm, **o.train_metrics}
        | {f"val_{k}": v for k, v in o.val_metrics.items()}
        for o in record.outcomes
    ]


def _mean(values) -> float:
    values = [v for v in values if v == v]
    return round(sum(values) / len(values), 3) if values else float("nan")
