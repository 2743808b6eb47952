"""Building the model, the strategy and a site from config, as the in-process run builds them.

Mirrors federation/experiment.py `_run_seed` step for step (same seed before
`build_model`, same round optimizer and loss), so that the coordinator's initial
model and a site's frozen weights equal the in-process run's. The coordinator
builds from the consortium plan alone; a site also loads its own data, and only
its own. (A candidate for one shared builder with experiment.py.)
"""
from __future__ import annotations

from functools import partial

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from federation.flower.plan import ConsortiumPlan, own_site_data
from federation.participation import Participation
from federation.site import Site
from federation.strategies.base import Strategy
from federation.validation import UpdateValidator
from modalities.consortium import Consortium, load_consortium
from modalities.dataset import collate_batch
from models.builder import build_model
from models.lit_module import MultimodalLitModule


def build_module(cfg: DictConfig, plan: ConsortiumPlan) -> MultimodalLitModule:
    """The global model as a LightningModule, seeded as the in-process run seeds it."""
    L.seed_everything(cfg.seed, verbose=False)
    model = build_model(cfg.model, list(plan.modalities), list(plan.labels))
    round_optimizer = instantiate(cfg.federation.get("optimizer") or cfg.model.optimizer)
    loss = instantiate(cfg.model.loss) if cfg.model.get("loss") else None
    return MultimodalLitModule(model, optimizer=round_optimizer, loss=loss, **cfg.model.get("training", {}))


def build_strategy(cfg: DictConfig) -> tuple[Strategy, Participation, UpdateValidator]:
    federation = cfg.federation
    return (
        instantiate(federation.strategy),
        Participation(**federation.get("participation", {})),
        UpdateValidator(**federation.get("validator", {})),
    )


def load_own_site(cfg: DictConfig, plan: ConsortiumPlan) -> Consortium:
    """This site's data only, read by the loader its data config names, with the consortium's label space."""
    site = str(cfg.deploy.site)
    plan.site_index(site)  # refuses a site the consortium does not know
    consortium = load_consortium(own_site_data(cfg.data, site, cfg.deploy.get("data_path")), seed=cfg.seed)
    names = [s.name for s in consortium.sites]
    if names != [site]:
        raise ValueError(f"the data loader {cfg.data.get('loader')!r} read sites {names}; a deployed site must read only its own ({site!r})")
    if list(consortium.label_space.labels) != list(plan.labels):
        raise ValueError(f"site {site!r} built the label space {list(consortium.label_space.labels)}, the consortium's is {list(plan.labels)}")
    return consortium


def build_site(cfg: DictConfig, consortium: Consortium, module: MultimodalLitModule) -> Site:
    collate = partial(collate_batch, modalities=module.model.modalities, readers=consortium.readers)
    return Site(consortium.sites[0], collate, cfg.data.batch_size, instantiate(cfg.trainer))
