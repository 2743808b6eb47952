"""What a governed run gives the engine: the round observers, who may take part, and the monitors' findings.

One place that turns the `governance` config into the engine's three hooks, so the
experiment and a deployed coordinator wire governance the same way.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from federation.governance import (
    SiteEvaluator,
    active_sites,
    build_observers,
    check_requirements,
    round_findings,
)


def governance_hooks(cfg, run_dir: Path, consortium, module, sites, device: str) -> dict:
    """Keyword arguments for InProcessEngine (observers, eligible, findings); {} when the run is not governed.

    Checks every member's requirements and the existing ledger before any training.
    """
    governance = cfg.get("governance")
    if governance is None or not governance.get("enabled", True):
        return {}
    check_requirements(governance, cfg.federation, cfg.get("privacy"))
    evaluator = SiteEvaluator(module, sites, device, metric=governance.promotion.metric)
    observers = build_observers(governance, run_dir, consortium, consortium.label_space.labels, evaluator=evaluator, run_config=cfg)
    names = [s.name for s in sites]
    return {
        "observers": observers,
        "eligible": lambda round_: set(active_sites(governance, run_dir, round_, names)),
        "findings": partial(round_findings, governance, evaluate=evaluator.mean_metric),
    }
