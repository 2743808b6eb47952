"""The coordinator and every site of the consortium on this machine over 127.0.0.1 (real Flower processes).

    python scripts/flower_loopback.py experiment=heart_flamby data.root=$PWD/../shared/data/heart federation.rounds=3

Makes the certificates and site keys if missing, starts the SuperLink (TLS, node
authentication) and one SuperNode per site, runs the federation, prints where the
results are, and stops every process. Running it again with the same
`deploy.run_dir` resumes an interrupted run.
"""
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from federation.entrypoint import hydra_task
from federation.flower.launch import split_overrides
from federation.flower.loopback import Loopback
from federation.settings import check_training_config


@hydra.main(config_path="../conf", config_name="deploy/loopback", version_base="1.3")
@hydra_task
def main(cfg: DictConfig) -> None:
    check_training_config(cfg)
    consortium, own = split_overrides(list(HydraConfig.get().overrides.task))
    with Loopback(cfg, consortium, own) as loopback:
        status = loopback.run()
    logging.getLogger(__name__).info("run %s; results in %s", status["state"], loopback.run_dir)
    sys.exit(0 if status["state"] == "finished" else 1)


if __name__ == "__main__":
    main()
