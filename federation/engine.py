"""The in-process federation engine: every site in one process, rounds run sequentially.

The embedded default runtime for research and sweeps. Each round: every site
trains the current global model on its own data and returns a ModelUpdate; the
strategy aggregates; the new global model is validated on each site's val split.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import lightning as L
from tqdm.auto import tqdm

from federation.evaluation import evaluate
from federation.site import Site
from federation.state import StateDict, get_state, set_state, trainable_keys
from federation.strategies.base import Strategy


@dataclass
class FederationResult:
    global_state: StateDict
    history: list[dict] = field(default_factory=list)
    """One row per round and site: round, site, n_train, update norm, train loss, val metrics of the new global model."""


class InProcessEngine:
    def __init__(self, sites: list[Site], module: L.LightningModule, strategy: Strategy, rounds: int, local_limits: dict, seed: int, device: str = "cpu"):
        """`local_limits`: Lightning Trainer kwargs bounding one site's local training per round."""
        self.sites = sites
        self.module = module
        self.strategy = strategy
        self.rounds = rounds
        self.local_limits = dict(local_limits)
        self.seed = seed
        self.device = device

    def run(self, progress: bool = True) -> FederationResult:
        state = get_state(self.module, trainable_keys(self.module))
        result = FederationResult(state)
        # What the strategy asks of the sites' local training (FedProx: a proximal term); none for most.
        objective = self.strategy.local_objective()
        bar = tqdm(range(1, self.rounds + 1), desc="federated rounds", unit="round", disable=not progress)
        for round_ in bar:
            updates = [
                site.train(self.module, state, self.local_limits, round_, seed=self.seed + 1000 * round_ + i, objective=objective)
                for i, site in enumerate(self.sites)
            ]
            state = self.strategy.aggregate(state, updates)
            set_state(self.module, state)
            rows = self._validate(round_, updates)
            result.history.extend(rows)
            bar.set_postfix(val_acc=_mean(r["val_accuracy"] for r in rows))
        result.global_state = state
        return result

    def _validate(self, round_: int, updates: list) -> list[dict]:
        rows = []
        for site, update in zip(self.sites, updates):
            metrics = evaluate(self.module.model, site.loader("val"), self.device)
            rows.append(
                {"round": round_, "site": site.name, "n_train": site.n_train, "update_norm": update.norm(), **update.metrics}
                | {f"val_{k}": v for k, v in metrics.items()}
            )
        return rows


def _mean(values) -> float:
    values = [v for v in values if v == v]
    return round(sum(values) / len(values), 3) if values else float("nan")
