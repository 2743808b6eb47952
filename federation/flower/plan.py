"""What the coordinator knows about the consortium without reading anyone's data.

A deployed coordinator never sees patient files: the site names (their order fixes
each site's training seed), the modalities the global model covers and the label
space all come from the shared `data` config. A site checks the plan it receives
against its own config (`fingerprint`) so that a mismatch stops it with a clear
error instead of training a different model.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from federation.site import training_seed
from modalities.base import Modality
from modalities.consortium import site_entries

TABLE_LOADER = "modalities.tables.load_table_sites"


@dataclass(frozen=True)
class ConsortiumPlan:
    sites: tuple[str, ...]
    """Site names in config order; a site's position is its index in the seed rule."""
    modalities: tuple[str, ...]
    labels: tuple[str, ...]

    def site_index(self, site: str) -> int:
        if site not in self.sites:
            raise KeyError(f"site {site!r} is not in the consortium config (sites: {list(self.sites)})")
        return self.sites.index(site)

    def seed(self, base: int, round_: int, site: str) -> int:
        """The site's training seed for a round, equal to the in-process engine's."""
        return training_seed(base, round_, self.site_index(site))

    @property
    def fingerprint(self) -> str:
        text = json.dumps({"sites": self.sites, "modalities": self.modalities, "labels": self.labels})
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def consortium_plan(data: DictConfig) -> ConsortiumPlan:
    """The plan from the `data` config alone; the label list must be declared there (`data.labels`)."""
    if not data.get("labels"):
        raise ValueError(
            "a deployment needs the consortium's label list in data.labels: the coordinator never reads site data, "
            "and every site must map diagnoses to the same output units"
        )
    entries = site_entries(data)
    names = [str(e["name"]) for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"data.sites names sites more than once: {duplicates}")
    return ConsortiumPlan(tuple(names), tuple(_modalities(data, entries)), tuple(str(label) for label in data.labels))


def site_modalities(data: DictConfig, plan: ConsortiumPlan) -> dict[str, tuple[str, ...]]:
    """Per site, the modalities its entry in the data config declares (entries that declare none: the plan's)."""
    declared = {str(e["name"]): tuple(e.get("modalities") or ()) for e in site_entries(data)}
    return {site: declared.get(site) or plan.modalities for site in plan.sites}


def own_site_data(data: DictConfig, site: str, data_path: str | None = None) -> DictConfig:
    """The `data` config narrowed to one site, so that its loader reads only that site's files.

    `data_path` (the site's folder, or its table file) replaces the path in the shared
    config, which names where the data lies in simulation, not on this machine.
    """
    entries = {str(e["name"]): e for e in site_entries(data)}
    if site not in entries:
        raise KeyError(f"site {site!r} is not in the consortium config (sites: {list(entries)})")
    entry = dict(entries[site])
    if data_path:
        entry["path"] = str(data_path)
    narrowed = OmegaConf.to_container(data, resolve=True)
    narrowed.update(sites=[entry], generate=None)
    return OmegaConf.create(narrowed)


def _modalities(data: DictConfig, entries: list[dict]) -> list[str]:
    declared = [m for e in entries for m in e.get("modalities") or []]
    if declared:
        return sorted(set(declared))
    if data.get("loader") == TABLE_LOADER:
        return [Modality.TABULAR.value]
    raise ValueError("data.sites entries declare no modalities; list each site's `modalities` in the data config")
