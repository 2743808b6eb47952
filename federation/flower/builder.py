"""Building the model, the strategy and a site from config, as the in-process run builds them.

Through federation/build.py, as the in-process run builds them, so that the
coordinator's initial model and a site's frozen weights equal the in-process
run's. The coordinator builds from the consortium plan alone; a site also loads
its own data, and only its own.
"""
from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from federation import build
from federation.flower import timing
from federation.flower.plan import ConsortiumPlan, own_site_data
from federation.flower.site_cache import SiteCache
from federation.participation import Participation
from federation.site import Site
from federation.strategies.base import Strategy
from federation.validation import UpdateValidator
from modalities.consortium import Consortium, load_consortium
from models.lit_module import MultimodalLitModule


def build_module(cfg: DictConfig, plan: ConsortiumPlan) -> MultimodalLitModule:
    """The global model as a LightningModule, seeded as the in-process run seeds it."""
    return build.build_module(cfg, plan.modalities, plan.labels, cfg.seed)


def build_strategy(cfg: DictConfig) -> tuple[Strategy, Participation, UpdateValidator]:
    federation = cfg.federation
    return (
        instantiate(federation.strategy),
        Participation(**federation.get("participation", {})),
        UpdateValidator(**federation.get("validator", {})),
    )


def load_own_site(cfg: DictConfig, plan: ConsortiumPlan, cache: SiteCache | None = None) -> Consortium:
    """This site's data only, read by the loader its data config names (or from the node's cache), with the consortium's label space."""
    site = str(cfg.deploy.site)
    plan.site_index(site)  # refuses a site the consortium does not know
    data = own_site_data(cfg.data, site, cfg.deploy.get("data_path"))
    if cache is None:
        consortium, source = load_consortium(data, seed=cfg.seed), "off"
    else:
        consortium, source = cache.load_or_build(data, int(cfg.seed), lambda: load_consortium(data, seed=cfg.seed))
    timing.note(cache=source)
    names = [s.name for s in consortium.sites]
    if names != [site]:
        raise ValueError(f"the data loader {cfg.data.get('loader')!r} read sites {names}; a deployed site must read only its own ({site!r})")
    if list(consortium.label_space.labels) != list(plan.labels):
        raise ValueError(f"site {site!r} built the label space {list(consortium.label_space.labels)}, the consortium's is {list(plan.labels)}")
    return consortium


def build_site(cfg: DictConfig, consortium: Consortium, module: MultimodalLitModule) -> Site:
    return build.build_sites(cfg, consortium, module)[0]
