"""What a search trial returns: one validation metric of one approach, aggregated over the sites.

The mean over sites is what FLamby reports and what the search maximises; the worst site is
a second objective, so that a setting which serves the big sites at a small site's expense
shows on the Pareto front instead of winning outright (the sweeper drops it for samplers that
optimise one objective, federation/sweeps/search.py). Set in the task config's `search`
section (conf/hparams_search/*.yaml); the metric and approach are checked against what the
run reports before anything trains.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from omegaconf import DictConfig

from federation.settings import ConfigError

AGGREGATES = ("mean", "worst")
DIRECTIONS = ("maximize", "minimize")
ADAPTED = ("calibrated", "finetuned", "finetuned_head", "ditto", "finetuned+calibrated", "local+calibrated", "mixture", "deployed")


@dataclass(frozen=True)
class Objective:
    metric: str
    approach: str = "federated"
    aggregates: tuple[str, ...] = AGGREGATES
    direction: str = "maximize"

    @classmethod
    def from_cfg(cls, search: Mapping) -> Objective:
        aggregates = tuple(search.get("aggregates") or AGGREGATES)
        for name in aggregates:
            if name not in AGGREGATES:
                raise ConfigError("search.aggregates", list(aggregates), f"each must be one of {AGGREGATES}")
        direction = search.get("direction", "maximize")
        if direction not in DIRECTIONS:
            raise ConfigError("search.direction", direction, f"must be one of {DIRECTIONS}")
        if not search.get("metric"):
            raise ConfigError("search.metric", search.get("metric"), "name the metric to optimise, e.g. accuracy")
        return cls(str(search["metric"]), str(search.get("approach", "federated")), aggregates, direction)

    @property
    def directions(self) -> list[str]:
        return [self.direction] * len(self.aggregates)

    def values(self, summary: Mapping) -> tuple[float, ...]:
        """The aggregates over the summary's sites (each site's value is its mean over the run's seeds)."""
        per_site = [self._site_value(site, entry) for site, entry in summary["sites"].items()]
        per_site = [v for v in per_site if not math.isnan(v)]
        if not per_site:
            return tuple(math.nan for _ in self.aggregates)
        worst = min(per_site) if self.direction == "maximize" else max(per_site)
        by_name = {"mean": sum(per_site) / len(per_site), "worst": worst}
        return tuple(float(by_name[name]) for name in self.aggregates)

    def _site_value(self, site: str, entry: Mapping) -> float:
        try:
            return float(entry[self.approach][self.metric])
        except KeyError:
            produced = {a: sorted(v) for a, v in entry.items() if isinstance(v, Mapping)}
            raise ConfigError("search.metric", f"{self.approach}/{self.metric}", f"site {site} reports no such value; it reports {produced}") from None


def check_objective(cfg: DictConfig) -> Objective:
    """The run's `search` objective, refused unless the run will report that metric for that approach."""
    search = cfg.get("search")
    if not search:
        raise ConfigError("search", None, "a search needs the task config's `search` section (metric, approach): use hparams_search=<name>")
    objective = Objective.from_cfg(search)
    reported = _reported_metrics(cfg)
    if objective.metric not in reported:
        raise ConfigError("search.metric", objective.metric, f"this run reports {reported} (report.metrics)")
    produced = produced_approaches(cfg)
    if objective.approach not in produced:
        raise ConfigError("search.approach", objective.approach, f"this run produces {produced}")
    return objective


def produced_approaches(cfg: DictConfig) -> list[str]:
    """The approaches this config's run reports (federation/driver/experiment.py)."""
    approaches = ["federated"]
    if cfg.get("personalisation", {}).get("enabled"):
        approaches.append("personalised")
    if cfg.get("baselines", {}).get("local"):
        approaches.append("local")
    if cfg.get("baselines", {}).get("pooled"):
        approaches.append("pooled")
    if cfg.get("adaptation", {}).get("enabled"):
        approaches += list(ADAPTED)
    return approaches


def _reported_metrics(cfg: DictConfig) -> list[str]:
    from models.metrics import METRIC_NAMES  # torch: imported only when a search is checked

    metrics = cfg.get("report", {}).get("metrics")
    return list(metrics) if metrics else list(METRIC_NAMES)


def trial_result(summary: Mapping, cfg: DictConfig) -> float | tuple[float, ...]:
    """What scripts/train.py returns to a sweeper: the search objective, else the overall federated first metric."""
    if cfg.get("search"):
        return Objective.from_cfg(cfg.search).values(summary)
    return summary["overall"]["federated"][summary["metric_names"][0]]
