"""Writes a simulated consortium (one folder per site) from conf/make_consortium.yaml.

    python scripts/make_consortium.py out_dir=/tmp/cons seed=0 [consortium=tiny]
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from federation.entrypoint import hydra_task
from modalities.synthetic import generate_consortium


@hydra.main(version_base="1.3", config_path="../conf", config_name="make_consortium")
@hydra_task
def main(cfg: DictConfig) -> None:
    consortium = OmegaConf.to_container(cfg.consortium, resolve=True)
    path = generate_consortium(cfg.out_dir, cfg.seed, **consortium)
    print(f"consortium ready at {path}")


if __name__ == "__main__":
    main()
