"""A site leaves: the consortium can have a model that its data never shaped.

A version is free of a site when no version in its lineage (itself, its parent,
and so on back to the initial model) was accepted in a round the site took part
in. Restoring the latest such version undoes the site's contributions exactly,
at the price of every later round; `retrain` mode takes that version as the
starting point of a new run without the site, which recovers the other sites'
later work.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.governance.agreement import members
from federation.governance.layout import governance_of, ledger_path, registry_dir
from federation.governance.ledger import ROUND, RUN_START, SITE_EXIT, Ledger
from federation.governance.participation import exited_sites
from federation.governance.registry import Registry, RegistryError
from federation.governance.rollback import check_run_dir, prepare_rollback, rollback
from federation.settings import ConfigError

EXIT_MODES = ("restore", "retrain")


@dataclass(frozen=True)
class ExitPlan:
    site: str
    mode: str
    version: int
    """The latest version free of the site: restored (restore), or the start of the retraining (retrain)."""


def version_without(registry: Registry, site: str) -> int:
    """The latest version whose whole lineage the site never contributed to."""
    for version in reversed(registry.versions()):
        if not _lineage_touched_by(registry, version, site):
            return version
    raise RegistryError(f"{registry.root}: every version includes site {site!r}'s contributions (no initial version 0?)")


def _lineage_touched_by(registry: Registry, version: int | None, site: str) -> bool:
    seen = set()
    while version is not None and version not in seen:
        seen.add(version)
        card = registry.card(version)
        if site in card.get("participants", []):
            return True
        version = card.get("parent")
    return False


def exit_site(run_dir: str | Path, site: str, reason: str = "", governance_cfg: Any = None) -> ExitPlan:
    """Record the site's exit and restore the latest version without it (both modes; retrain then reruns from it).

    Checked before anything is written: the site is a member (by the agreement, or by the
    ledger for an open agreement) and has not left already, and the restore would succeed.
    A typo must not become permanent audit history.
    """
    cfg = governance_cfg if governance_cfg is not None else governance_of(check_run_dir(run_dir))
    mode = cfg.exit.mode
    if mode not in EXIT_MODES:
        raise ValueError(f"governance.exit.mode must be one of {EXIT_MODES}, got {mode!r}")
    ledger = Ledger(ledger_path(cfg, run_dir), must_exist=True)
    entries = ledger.entries()
    recorded = ledger_sites(entries)
    known = set(members(cfg, recorded)) | recorded
    if site not in known:
        raise ConfigError("exit_site", site, f"not a member of this run's consortium (members: {', '.join(sorted(known)) or 'none'})")
    if site in exited_sites(entries):
        raise ConfigError("exit_site", site, "has left already: the ledger records its exit")
    plan = ExitPlan(site, mode, version_without(Registry(registry_dir(cfg, run_dir)), site))
    prepare_rollback(run_dir, plan.version, cfg)
    ledger.append(SITE_EXIT, {"site": site, "reason": reason or "the site left the consortium", "mode": mode, "version_without_site": plan.version})
    rollback(run_dir, plan.version, reason=f"site {site!r} left: restoring the latest version without its contributions", governance_cfg=cfg)
    return plan


def ledger_sites(entries: list[dict[str, Any]]) -> set[str]:
    """Sites the ledger names: the members its run_start recorded and the sites of every round."""
    names = set()
    for entry in entries:
        if entry["kind"] == RUN_START:
            names |= {m["name"] for m in entry["data"].get("members") or [] if isinstance(m, dict) and m.get("name")}
        elif entry["kind"] == ROUND:
            names |= set(entry["data"].get("sites") or {})
    return names
