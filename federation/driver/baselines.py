"""The two references every federated result is read against.

Local-only: each site trains alone (what it can do without the consortium).
Pooled: one model on everyone's training data (what centralising would give,
which privacy law forbids). Both start from the same initial weights and train
for as many epochs (or steps) as a site does over the whole federated run,
unless the config gives the baselines their own budget.
"""
from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader

from federation.site import Site
from federation.state import StateDict, get_state, set_state


def train_local(site: Site, module: L.LightningModule, initial_state: StateDict, limits: dict, seed: int) -> StateDict:
    site.fit(module, initial_state, limits, seed, objective={}, private=False)  # never leaves the site
    return get_state(module, list(initial_state))


def train_pooled(
    sites: list[Site], module: L.LightningModule, initial_state: StateDict, limits: dict, seed: int, make_trainer: Callable[..., L.Trainer]
) -> StateDict:
    set_state(module, initial_state)
    L.seed_everything(seed, workers=True, verbose=False)
    pooled = ConcatDataset([site.data.splits["train"] for site in sites])
    loader = DataLoader(pooled, batch_size=sites[0].batch_size, shuffle=True, collate_fn=sites[0].collate, generator=torch.Generator().manual_seed(seed))
    n_classes = module.model.n_classes
    module.set_class_counts(sum(site.class_counts(n_classes) for site in sites))
    try:
        make_trainer(**limits).fit(module, train_dataloaders=loader)
    finally:
        module.set_class_counts(None)
    return get_state(module, list(initial_state))
