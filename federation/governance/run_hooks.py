"""What a governed run gives the round loop: the round observers, who may take part, and the monitors' findings.

One place that turns the `governance` config into the loop's three hooks, so the
experiment (`governance_hooks`, in process) and a deployed coordinator
(`deployment_hooks`, server_app.py) wire governance the same way: the same
participation rules, promotion rule, ledger and registry, in the run folder.

A deployed coordinator never sees patient data, so it governs with what the sites
send: update norms and sample counts (anomaly flags), validation metrics with the
number of validation patients (the promotion rule). Three findings need more and
are not computed in a deployment; every round's ledger entry says so under
`findings["unavailable"]` (see UNAVAILABLE):

- drift: feature summaries of each site's raw data, which the sites do not send;
- subgroups: per-patient predictions and attributes (sex, age), which stay at the sites;
- contribution: leave-one-out needs every site's validation metric of one extra
  model per site per round; sites evaluate only the round's candidate.

The feedback entry likewise records that deployed sites report no feedback
counts, and the model cards carry each site's modalities but not its split sizes
or missing shares. A resumed coordinator continues the ledger with a new
run_start entry.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from federation.governance import (
    SiteEvaluator,
    active_sites,
    assemble_observers,
    build_observers,
    check_requirements,
    round_findings,
)
from federation.round_record import RoundRecord

UNAVAILABLE = {
    "drift": "not computed in a deployment: the sites' feature summaries stay at the sites",
    "subgroups": "not computed in a deployment: per-patient predictions and attributes stay at the sites",
    "contribution": "not computed in a deployment: leave-one-out would need each site to evaluate one extra model per site and round",
}
FEEDBACK_UNREPORTED = "clinician-confirmed cases in each site's validation split: not reported, deployed sites keep their feedback files"


def governed(cfg) -> bool:
    """Whether the run keeps a ledger and registry: a `governance` config that is not `enabled: false`."""
    governance = cfg.get("governance")
    return governance is not None and bool(governance.get("enabled", True))


def governance_hooks(cfg, run_dir: Path, consortium, module, sites, device: str) -> dict:
    """Keyword arguments for InProcessEngine (observers, eligible, findings); {} when the run is not governed.

    Checks every member's requirements and the existing ledger before any training.
    """
    if not governed(cfg):
        return {}
    governance = cfg.governance
    check_requirements(governance, cfg.federation, cfg.get("privacy"))
    evaluator = SiteEvaluator(module, sites, device, metric=governance.promotion.metric)
    observers = build_observers(governance, run_dir, consortium, consortium.label_space.labels, evaluator=evaluator, run_config=cfg)
    names = [s.name for s in sites]
    return {
        "observers": observers,
        "eligible": lambda round_: set(active_sites(governance, run_dir, round_, names)),
        "findings": partial(round_findings, governance, evaluate=evaluator.mean_metric),
    }


def deployment_hooks(cfg, run_dir: Path, plan, site_modalities: dict[str, list[str]]) -> dict:
    """Keyword arguments for the Coordinator (observers, eligible, findings); {} when the run is not governed.

    `plan`: the consortium plan (site names and labels); `site_modalities`: per site, the
    modalities the data config declares. Checks requirements and the ledger before any round.
    """
    if not governed(cfg):
        return {}
    governance = cfg.governance
    check_requirements(governance, cfg.federation, cfg.get("privacy"))
    data = {site: {"modalities": list(modalities)} for site, modalities in site_modalities.items()}
    observers = assemble_observers(governance, run_dir, site_modalities, list(plan.labels), data=lambda: data, run_config=cfg,
                                   feedback_note=FEEDBACK_UNREPORTED)
    names = list(plan.sites)
    return {
        "observers": [NotComputed(UNAVAILABLE)] + observers,
        "eligible": lambda round_: set(active_sites(governance, run_dir, round_, names)),
        "findings": partial(round_findings, governance),  # anomaly flags; no evaluator, so no contributions
    }


class NotComputed:
    """Observer: records which findings this runtime cannot compute, and why, in every round's findings."""

    def __init__(self, notes: dict[str, str]):
        self.notes = dict(notes)

    def on_round(self, record: RoundRecord) -> None:
        record.extra["unavailable"] = dict(self.notes)
