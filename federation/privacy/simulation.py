"""The in-process engine with a privacy config applied, for scripts that need only the trained model.

What federation/driver/experiment.py does for a full run (DP-SGD sites with their budgets,
site-level DP wrapping the strategy), without baselines or run outputs. Used by
scripts/membership_inference.py and benchmarks/dp_heart.py.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from federation.engine import InProcessEngine
from federation.privacy.hooks import make_sites_private, pretrain_public, wrap_strategy
from federation.round_record import Cause
from federation.state import StateDict
from federation.strategies.base import Strategy


@dataclass
class PrivateRun:
    global_state: StateDict
    rounds: list[dict] = field(default_factory=list)
    """Per round: the sites that contributed, those that stopped (and why), and privacy spent per site."""


def run_private_federation(sites, module, strategy: Strategy, rounds: int, limits: Mapping, seed: int, privacy_cfg: Mapping | None,
                           labels=()) -> PrivateRun:
    """`labels`: the label diseases, for public pretraining (`privacy.public_pretraining`)."""
    make_sites_private(privacy_cfg, sites, limits, rounds, module.model)  # the plan checked before anything trains
    pretrain_public(privacy_cfg, module, labels, seed)
    engine = InProcessEngine(sites, module, wrap_strategy(strategy, privacy_cfg, rounds), rounds, dict(limits), seed)
    result = engine.run(progress=False)
    run = PrivateRun(result.global_state)
    for record in result.records:
        stopped = {o.site: o.reason for o in record.outcomes if o.cause is Cause.PRIVACY_BUDGET}
        run.rounds.append({"round": record.round, "sites": record.participants(), "stopped": stopped, "privacy": record.privacy})
    return run
