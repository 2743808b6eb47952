"""The Hydra config each deployed process composes: the coordinator's and a site's.

Every process composes the project's own config (conf/): the consortium-wide
overrides travel with the run (`flwr run --run-config consortium=...`), the
coordinator's own with it too (`coordinator=...`), and a site's own settings come
from its SuperNode's node config (`--node-config "site=... data=... overrides=..."`),
so a hospital decides where its data lies and never learns another site's paths.
"""
from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
COORDINATOR_CONFIG = "deploy/coordinator"
SITE_CONFIG = "deploy/site"


def compose_config(config_name: str, overrides: Sequence[str]) -> DictConfig:
    if GlobalHydra.instance().is_initialized():  # inside a @hydra.main script, already on conf/
        return compose(config_name, overrides=list(overrides))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def split_overrides(text: object) -> list[str]:
    """A run- or node-config value holding Hydra overrides, shell-quoted and space-separated."""
    return shlex.split(str(text or ""))


def join_overrides(overrides: Sequence[str]) -> str:
    """Hydra overrides as one run- or node-config value (`split_overrides` reads it back)."""
    return shlex.join(overrides)


def coordinator_config(run_config: Mapping[str, object]) -> DictConfig:
    overrides = split_overrides(run_config.get("consortium")) + split_overrides(run_config.get("coordinator"))
    return compose_config(COORDINATOR_CONFIG, overrides)


def site_config(run_config: Mapping[str, object], node_config: Mapping[str, object]) -> DictConfig:
    """The site's config: consortium overrides from the run, then this node's own (which win)."""
    consortium = split_overrides(run_config.get("consortium"))
    site = node_config.get("site") or _simulated_site(consortium, node_config)
    if not site:
        raise ValueError("this SuperNode has no site name: start it with --node-config \"site='<name in the consortium config>' ...\"")
    own = [f"deploy.site={site}"] + ([f"deploy.data_path={node_config['data']}"] if node_config.get("data") else [])
    return compose_config(SITE_CONFIG, consortium + own + split_overrides(node_config.get("overrides")))


def _simulated_site(consortium: list[str], node_config: Mapping[str, object]) -> str | None:
    """Flower's simulation runtime numbers its virtual nodes (`partition-id`): node i is the consortium's i-th site."""
    if "partition-id" not in node_config:
        return None
    from federation.flower.plan import consortium_plan

    sites = consortium_plan(compose_config("train", consortium).data).sites
    return sites[int(node_config["partition-id"])] if int(node_config["partition-id"]) < len(sites) else None


def node_config_string(site: str, data_path: str | None, overrides: Sequence[str], timing_log: str | None = None) -> str:
    """What `flower-supernode --node-config` takes for `site_config` to read back (and `timing`: for timing_mod, no config needed)."""
    parts = {"site": site, "data": data_path or "", "overrides": join_overrides(overrides)} | ({"timing": timing_log} if timing_log else {})
    return " ".join(f"{key}={_toml_string(value)}" for key, value in parts.items())


def _toml_string(value: str) -> str:
    # flwr splits the node config on spaces outside quotes; single-quoted TOML strings are literal
    if "'" in value:
        raise ValueError(f"node config values cannot contain a single quote: {value!r}")
    return f"'{value}'"
