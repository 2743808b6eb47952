"""Evaluating candidate global models at the sites' validation splits, for the monitors that need predictions.

In process, the monitors borrow the engine's module: each call loads the state to
judge and restores the module's own state afterwards, so observers never change
the model the engine is about to commit.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch

from federation.evaluation import evaluate, predict
from federation.site import Site
from federation.state import StateDict, get_state, set_state


class SiteEvaluator:
    def __init__(self, module: L.LightningModule, sites: list[Site], device: str = "cpu", metric: str = "accuracy", split: str = "val"):
        self.module = module
        self.sites = {site.name: site for site in sites}
        self.device = device
        self.metric = metric
        self.split = split

    @contextmanager
    def _holding(self, state: StateDict) -> Iterator[None]:
        saved = get_state(self.module, list(state))
        set_state(self.module, state)
        try:
            yield
        finally:
            set_state(self.module, saved)

    def predictions(self, state: StateDict, site: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels of `state` on the site's split, in the split's item order."""
        with self._holding(state):
            return predict(self.module.model, self.sites[site].loader(self.split), self.device)

    def mean_metric(self, state: StateDict) -> float:
        """`metric` of `state`, averaged over the sites (unweighted: every site counts the same)."""
        with self._holding(state):
            values = [evaluate(self.module.model, site.loader(self.split), self.device)[self.metric] for site in self.sites.values()]
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    def metas(self, site: str) -> list[dict[str, Any]]:
        """Each validation patient's attributes (sex, age, ancestry where known), in item order."""
        return [dict(item.get("meta") or {}) for item in self.sites[site].data.splits[self.split]]
