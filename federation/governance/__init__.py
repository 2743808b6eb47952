"""Consortium governance over the federation: the agreement, the audit ledger, the model registry, monitoring.

The engine produces one `RoundRecord` per round and hands it to the observers
`build_observers` returns, in order, after aggregation and validation and before
it commits the new global model:

1. `ParticipationGuard`: members only, exits, privacy budgets, minimum sites, missed cycles;
2. `DriftMonitor` and `SubgroupMonitor`: data drift and subgroup performance;
3. `PromotionGate`: the promotion rule against the registry's current version;
4. `LedgerWriter`: the round's hash-chained ledger entry, with the final decision;
5. `RegistryWriter`: the accepted model as a new registry version with its card.

If an observer refuses the round, `record.decision` is no longer "accepted" and
`record.global_state` is the previous state: the engine keeps it. `round_findings`
gives what needs the raw updates (anomaly flags, leave-one-out contributions), for
the engine to put into `record.extra` before the observers run; `finish` writes
the dashboard.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from federation.governance.agreement import (
    GovernanceError,
    check_membership,
    check_requirements,
    is_secure,
    members,
)
from federation.governance.audit import FEEDBACK_NOTE, LedgerWriter
from federation.governance.cards import RegistryWriter, data_summary
from federation.governance.dashboard import write_dashboard
from federation.governance.feedback import feedback_counts
from federation.governance.hashing import canonical_json, sha256_text
from federation.governance.layout import ledger_path, registry_dir
from federation.governance.ledger import Ledger, LedgerError
from federation.governance.monitoring import (
    DriftMonitor,
    SubgroupMonitor,
    anomaly_flags,
    feature_summary,
    leave_one_out,
    update_geometry,
)
from federation.governance.monitoring.evaluator import SiteEvaluator
from federation.governance.participation import (
    ParticipationGuard,
    active_sites,
    exited_sites,
)
from federation.governance.promotion import PromotionGate, PromotionRule
from federation.governance.registry import Registry, RegistryError
from federation.round_record import RoundObserver
from federation.state import StateDict
from federation.strategies.base import Strategy
from federation.update import ModelUpdate

UNSEEN = "not computed: secure aggregation hides individual updates from the coordinator"

__all__ = [
    "GovernanceError",
    "LedgerError",
    "RegistryError",
    "SiteEvaluator",
    "active_sites",
    "assemble_observers",
    "build_observers",
    "check_requirements",
    "finish",
    "round_findings",
]


def build_observers(
    governance_cfg: Any, run_dir: str | Path, consortium: Any, label_names: Sequence[str], *, evaluator: SiteEvaluator | None = None, run_config: Any = None
) -> list[RoundObserver]:
    """The round observers, in the order they must run; [] without a governance config.

    Checks membership and verifies an existing ledger now, before any training, and
    writes nothing until the first round. `evaluator` (optional) enables subgroup
    monitoring; `run_config` goes into every model card (default: the governance config).
    """
    if governance_cfg is None:
        return []
    cfg = OmegaConf.create(governance_cfg) if not OmegaConf.is_config(governance_cfg) else governance_cfg
    sites = {s.name: s.modalities for s in consortium.sites}
    return assemble_observers(cfg, run_dir, sites, label_names, summaries=_summaries(consortium, int(cfg.monitoring.min_count)), evaluator=evaluator,
                              feedback=lambda: feedback_counts(consortium), data=lambda: data_summary(consortium), run_config=run_config)


def assemble_observers(
    cfg: Any, run_dir: str | Path, sites: Mapping[str, Sequence[str]], label_names: Sequence[str], *, summaries: Callable[[], dict] | None = None,
    evaluator: SiteEvaluator | None = None, feedback: Callable[[], Mapping[str, int]] | None = None, data: Callable[[], Mapping[str, dict]] | None = None,
    run_config: Any = None, feedback_note: str = FEEDBACK_NOTE,
) -> list[RoundObserver]:
    """The observers from what the runtime knows of its sites: `sites` (name -> modalities) always; the rest where it can see them.

    `summaries`: the sites' feature summaries (drift monitoring; None: not monitored); `evaluator`: subgroup
    monitoring; `feedback`: clinician cases per site (None: none known, `feedback_note` says why); `data`:
    each site's data summary for the model cards.
    """
    check_membership(cfg, sites)
    ledger = Ledger(ledger_path(cfg, run_dir), must_exist=bool(cfg.ledger.must_exist))
    registry = Registry(registry_dir(cfg, run_dir))
    agreed = members(cfg, sites)
    observers: list[RoundObserver] = [ParticipationGuard(agreed, OmegaConf.to_container(cfg.participation), exited_sites(ledger.entries()))]
    if summaries is not None:
        observers.append(DriftMonitor(summaries, float(cfg.monitoring.drift_threshold)))
    if evaluator is not None:
        observers.append(SubgroupMonitor(evaluator, list(cfg.monitoring.age_bands), int(cfg.monitoring.min_count)))
    config = OmegaConf.to_container(run_config, resolve=True) if OmegaConf.is_config(run_config) else run_config
    observers += [
        PromotionGate(registry, PromotionRule.from_cfg(OmegaConf.to_container(cfg.promotion))),
        LedgerWriter(ledger, _run_start(cfg, agreed, label_names), feedback() if feedback else {}, str(cfg.exit.mode), feedback_note),
        RegistryWriter(registry, label_names, data() if data else {}, config or {"governance": OmegaConf.to_container(cfg, resolve=True)}),
    ]
    return observers


def round_findings(
    governance_cfg: Any,
    updates: list[ModelUpdate],
    strategy: Strategy | None = None,
    previous_state: StateDict | None = None,
    evaluate: Callable[[StateDict], float] | None = None,
) -> dict[str, Any]:
    """What the engine adds to `record.extra` from the round's accepted updates: anomaly flags, contributions.

    Both need individual updates, which secure aggregation exists to hide: with a
    secure strategy nothing is computed (and the findings say so). Contributions
    also need `strategy`, `previous_state` and `evaluate`, and `monitoring.contribution`.
    """
    if strategy is not None and is_secure(strategy):
        return {"anomaly": {"note": UNSEEN}, "contribution_note": UNSEEN}
    anomaly = governance_cfg.monitoring.anomaly
    findings: dict[str, Any] = {
        "anomaly": {"flags": anomaly_flags(updates, float(anomaly.norm_z), float(anomaly.min_cosine)), "geometry": update_geometry(updates)}
    }
    if governance_cfg.monitoring.contribution and None not in (strategy, previous_state, evaluate):
        findings["contribution"] = leave_one_out(strategy.combine, previous_state, updates, evaluate, float(getattr(strategy, "server_lr", 1.0)))
    return findings


def finish(run_dir: str | Path, governance_cfg: Any = None) -> Path:
    """Write the run's dashboard (after the last round); returns its path."""
    return write_dashboard(run_dir, governance_cfg)


def _summaries(consortium: Any, min_count: int) -> Callable[[], dict]:
    names = _feature_names(getattr(consortium, "readers", None) or {})
    return lambda: {s.name: feature_summary(s, min_count=min_count, names=names) for s in consortium.sites}


def _feature_names(readers: dict) -> dict[str, list[str]]:
    """Readable feature names where the readers know them (lab analytes, HPO term ids)."""
    names = {}
    if hasattr(readers.get("labs"), "analyte_names"):
        names["labs"] = list(readers["labs"].analyte_names)
    if hasattr(readers.get("phenotypes"), "hpo"):
        names["phenotypes"] = list(readers["phenotypes"].hpo.term_ids)
    return names


def _run_start(cfg: Any, agreed: dict, label_names: Sequence[str]) -> dict[str, Any]:
    plain = OmegaConf.to_container(cfg, resolve=True)
    return {
        "consortium": cfg.get("name"),
        "members": [asdict(m) for m in agreed.values()],
        "participation": plain.get("participation"),
        "promotion": plain.get("promotion"),
        "exit": plain.get("exit"),
        "governance_sha256": sha256_text(canonical_json(plain)),
        "labels": {"count": len(label_names), "sha256": sha256_text(canonical_json(list(label_names)))},
    }
