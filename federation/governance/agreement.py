"""The consortium agreement: who is a member, what each member requires, and whether a run honours it.

A site agrees to take part on conditions (secure aggregation, a differential-privacy
budget); the coordinator must not run a round that breaks them. `check_requirements`
compares the agreement with the run's federation and privacy config before any
training, and names the site and the requirement it would break. Secure
aggregation is on when `federation.strategy` is a `SecureFedAvg`; DP is on when
`privacy.kind` is not `none`, with the budget `privacy.epsilon` (conf/privacy/).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.utils import get_class
from omegaconf import OmegaConf

NO_DP = (None, "none")


class GovernanceError(ValueError):
    """A run would break the consortium agreement; names the site and the requirement."""

    def __init__(self, site: str, requirement: str, message: str):
        self.site = site
        self.requirement = requirement
        super().__init__(f"site {site!r}, requirement {requirement}: {message}")


@dataclass(frozen=True)
class Member:
    name: str
    jurisdiction: str = ""
    modalities: tuple[str, ...] = ()
    requires: dict[str, Any] = field(default_factory=dict)
    joined_round: int = 1
    left_after_round: int | None = None

    def active_in(self, round_: int) -> bool:
        return round_ >= self.joined_round and (self.left_after_round is None or round_ <= self.left_after_round)


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def members(governance_cfg: Any, site_names: Iterable[str] = ()) -> dict[str, Member]:
    """The members by name; `sites: null` admits every site of the run (`site_names`) with no requirements."""
    declared = _plain(governance_cfg).get("sites")
    if declared is None:
        return {name: Member(name) for name in site_names}
    out = {}
    for i, entry in enumerate(declared):
        if not entry.get("name"):
            raise ValueError(f"governance.sites[{i}]: a member needs a name")
        out[entry["name"]] = Member(
            name=entry["name"],
            jurisdiction=str(entry.get("jurisdiction") or ""),
            modalities=tuple(entry.get("modalities") or ()),
            requires=dict(entry.get("requires") or {}),
            joined_round=int(entry.get("joined_round") or 1),
            left_after_round=entry.get("left_after_round"),
        )
    return out


def check_membership(governance_cfg: Any, sites: Mapping[str, Iterable[str]]) -> None:
    """Every site of the run is a member and holds only the modalities it agreed to train on."""
    agreed = members(governance_cfg, sites)
    for name, modalities in sites.items():
        if name not in agreed:
            raise GovernanceError(
                name, "membership", f"not a member of the consortium agreement (members: {', '.join(agreed)}); for data the agreement does not cover, use governance=open"
            )
        extra = sorted(set(modalities) - set(agreed[name].modalities)) if agreed[name].modalities else []
        if extra:
            raise GovernanceError(name, "modalities", f"holds {extra}, which its agreement does not list ({list(agreed[name].modalities)})")


def check_requirements(governance_cfg: Any, federation_cfg: Any, privacy_cfg: Any | None) -> None:
    """Raise GovernanceError for the first member whose stated requirement this run would break."""
    federation, privacy = _plain(federation_cfg) or {}, _plain(privacy_cfg) or {}
    secure = secure_aggregation(federation)
    dp_on = privacy.get("kind") not in NO_DP
    epsilon = privacy.get("epsilon")
    for member in members(governance_cfg).values():
        needs = member.requires
        if needs.get("secure_aggregation") and not secure:
            raise GovernanceError(member.name, "secure_aggregation", f"requires secure aggregation, but the strategy is {_target(federation)!r} (use federation=secure_fedavg)")
        max_epsilon = needs.get("max_epsilon")
        if max_epsilon is None:
            continue
        if not dp_on:
            raise GovernanceError(member.name, f"max_epsilon={max_epsilon}", "requires differential privacy, but privacy.kind is none (use privacy=dp_sgd or privacy=site_dp)")
        if epsilon is None or float(epsilon) > float(max_epsilon):
            raise GovernanceError(member.name, f"max_epsilon={max_epsilon}", f"the run's DP budget is privacy.epsilon={epsilon}, above the site's maximum")


def secure_aggregation(federation: Mapping) -> bool:
    """Whether the configured strategy aggregates through secure aggregation (the coordinator never sees one update)."""
    target = _target(federation)
    return bool(target) and is_secure(get_class(target))


def is_secure(strategy: Any) -> bool:
    """Whether a strategy (class or instance) aggregates through secure aggregation (declares `secure_aggregation`)."""
    return bool(getattr(strategy, "secure_aggregation", False))


def _target(federation: Mapping) -> str:
    return str((federation.get("strategy") or {}).get("_target_") or "")
