"""The participation rules of the agreement, applied to each round.

- A site that has left (its `left_after_round` has passed, or the ledger records
  its exit) or has not joined yet must not shape the model: a round that used its
  update is rejected. The engine should not ask it in the first place
  (`active_sites`).
- A site whose DP budget spent (RoundRecord.privacy) exceeds its stated maximum
  makes the round rejected.
- Fewer accepted updates than `min_sites`: the round fails and nothing changes.
- A site that misses `max_missed` consecutive cycles is flagged (`on_miss: warn`)
  or leaves (`on_miss: exit`: a site_exit entry, excluded from then on).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from federation.governance.agreement import Member, members
from federation.governance.decisions import refuse
from federation.governance.layout import ledger_path
from federation.governance.ledger import SITE_EXIT, read_ledger
from federation.round_record import (
    ACCEPTED,
    REJECTED,
    ROUND_FAILED,
    ROUND_REJECTED,
    RoundRecord,
)

ON_MISS = ("warn", "exit")


def exited_sites(entries: Iterable[Mapping[str, Any]]) -> set[str]:
    """Sites with a site_exit entry in the ledger."""
    return {e["data"]["site"] for e in entries if e["kind"] == SITE_EXIT}


def active_sites(governance_cfg: Any, run_dir: str | Path, round_: int, site_names: Iterable[str]) -> list[str]:
    """The sites the engine may ask this round: members by the agreement, and not exited in the ledger."""
    path = ledger_path(governance_cfg, run_dir)
    gone = exited_sites(read_ledger(path)) if path.exists() else set()
    agreed = members(governance_cfg, site_names)
    return [s for s in site_names if s in agreed and agreed[s].active_in(round_) and s not in gone]


class ParticipationGuard:
    def __init__(self, agreed: Mapping[str, Member], rules: Mapping[str, Any], exited: Iterable[str] = ()):
        if rules.get("on_miss", "warn") not in ON_MISS:
            raise ValueError(f"governance.participation.on_miss must be one of {ON_MISS}, got {rules.get('on_miss')!r}")
        self.members = dict(agreed)
        self.min_sites = int(rules.get("min_sites", 1))
        self.max_missed = int(rules.get("max_missed", 0) or 0)
        self.on_miss = rules.get("on_miss", "warn")
        self.exited = set(exited)
        self.missed: dict[str, int] = {name: 0 for name in self.members}

    def on_round(self, record: RoundRecord) -> None:
        exits = self._scheduled_exits(record.round)
        self._refuse_outsiders(record)
        self._refuse_overspent(record)
        participants = record.participants()
        if len(participants) < self.min_sites:
            refuse(record, ROUND_FAILED, f"{len(participants)} site(s) took part, fewer than the agreed minimum of {self.min_sites}")
        flags = self._count_misses(record)
        exits += [{"site": s, "reason": f"missed {self.missed[s]} consecutive cycles (max_missed {self.max_missed})"} for s in flags if self.on_miss == "exit"]
        self.exited.update(e["site"] for e in exits)
        record.extra["participation"] = {"missed": dict(self.missed), "flags": {s: ["missed_cycles"] for s in flags}, "exits": exits}

    def _scheduled_exits(self, round_: int) -> list[dict[str, str]]:
        due = [m for m in self.members.values() if m.left_after_round is not None and round_ > m.left_after_round and m.name not in self.exited]
        return [{"site": m.name, "reason": f"left after round {m.left_after_round} (governance.sites)"} for m in due]

    def _refuse_outsiders(self, record: RoundRecord) -> None:
        for site in record.participants():
            member = self.members.get(site)
            if member is None:
                refuse(record, ROUND_REJECTED, f"site {site!r} is not a member of the consortium; its update must not be used")
            elif site in self.exited or not member.active_in(record.round):
                refuse(record, ROUND_REJECTED, f"site {site!r} is not a member in round {record.round} (it left or has not joined); its update must not be used")

    def _refuse_overspent(self, record: RoundRecord) -> None:
        for site, spent in record.privacy.items():
            limit = self.members[site].requires.get("max_epsilon") if site in self.members else None
            epsilon = spent.get("epsilon")
            if limit is not None and epsilon is not None and float(epsilon) > float(limit):
                refuse(record, ROUND_REJECTED, f"site {site!r} has spent epsilon={float(epsilon):.3g}, above its max_epsilon={limit}")

    def _count_misses(self, record: RoundRecord) -> list[str]:
        """Sites at or past `max_missed` consecutive misses (skipped, failed or absent) among those expected."""
        statuses = {o.site: o.status for o in record.outcomes}
        flagged = []
        for name, member in self.members.items():
            if name in self.exited or not member.active_in(record.round):
                continue
            self.missed[name] = 0 if statuses.get(name) in (ACCEPTED, REJECTED) else self.missed[name] + 1  # took part or not
            if self.max_missed and self.missed[name] >= self.max_missed:
                flagged.append(name)
        return flagged
