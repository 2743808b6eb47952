"""The registry's observer and the model card it writes for every accepted global model.

A card says where a model came from and what it is good for, in aggregates only:
the round and parent version, the ledger entry that accepted it, each site's
training sample counts and data completeness, validation metrics per site and per
subgroup, privacy spent, and the run's config. The first round also registers the
initial model as version 0, so an exit or rollback always has a version to return to.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from federation.governance.hashing import jsonable
from federation.governance.registry import Registry
from federation.round_record import ROUND_ACCEPTED, RoundRecord


def data_summary(consortium: Any) -> dict[str, dict[str, Any]]:
    """Per site: its modalities, split sizes and missing shares (from the consortium's quality reports)."""
    quality = getattr(consortium, "quality", None) or {}
    out = {}
    for site in consortium.sites:
        report = quality.get(site.name, {})
        out[site.name] = {"modalities": list(site.modalities), "splits": report.get("splits") or {k: len(v) for k, v in site.splits.items()}}
        if "missing" in report:
            out[site.name]["missing"] = report["missing"]
    return out


def mean_over_sites(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    names = {name for m in metrics.values() for name in m}
    out = {}
    for name in sorted(names):
        values = [float(m[name]) for m in metrics.values() if m.get(name) is not None and math.isfinite(float(m[name]))]
        out[name] = sum(values) / len(values) if values else math.nan
    return out


def model_card(record: RoundRecord, data: Mapping[str, dict], config: Mapping[str, Any]) -> dict[str, Any]:
    metrics = {o.site: dict(o.val_metrics) for o in record.outcomes if o.val_metrics}
    ledger = record.extra.get("ledger", {})
    return jsonable({
        "round": record.round,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "parent": record.extra.get("registry", {}).get("parent_version"),
        "ledger_entry": ledger.get("entry_hash"),
        "ledger_seq": ledger.get("seq"),
        "participants": record.participants(),
        "data": {o.site: {**data.get(o.site, {}), "status": o.status, "n_samples": o.n_samples, "sample_counts": o.sample_counts} for o in record.outcomes},
        "metrics": {"sites": metrics, "mean_over_sites": mean_over_sites(metrics)},
        "subgroups": record.extra.get("subgroups", {}),
        "privacy": record.privacy,
        "config": config,
    })


class RegistryWriter:
    def __init__(self, registry: Registry, labels: Sequence[str], data: Mapping[str, dict], config: Mapping[str, Any]):
        self.registry = registry
        self.metadata = {"labels": json.dumps(list(labels))}
        self.data = dict(data)
        self.config = jsonable(config)

    def on_round(self, record: RoundRecord) -> None:
        if not self.registry.versions():
            self._save_initial(record)
        if record.decision != ROUND_ACCEPTED:
            return
        version = record.extra.get("registry", {}).get("version")
        version = self.registry.next_version() if version is None else version
        self.registry.save(version, record.global_state, model_card(record, self.data, self.config), self.metadata)

    def _save_initial(self, record: RoundRecord) -> None:
        card = {
            "round": 0,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "parent": None,
            "ledger_entry": record.extra.get("ledger", {}).get("run_start"),
            "participants": [],
            "data": {},
            "metrics": {},
            "config": self.config,
            "note": "the initial model, before any round",
        }
        self.registry.save(0, record.previous_state, card, self.metadata)
