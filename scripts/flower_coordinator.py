"""The consortium's coordinator on its own machine: the SuperLink (TLS, node authentication) and the federated run.

    python scripts/flower_coordinator.py experiment=heart_flamby deploy.superlink.host=0.0.0.0

Starts the SuperLink, registers each consortium site's key (deploy.auth.site_keys/<site>.pub,
made by scripts/make_certificates.sh), submits the run, waits for it and stops the SuperLink.
Overrides other than `deploy.*` are the consortium's and travel to every site with the run.
Results are in deploy.run_dir; run the same command again to resume after a crash.
"""
import logging
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from federation.entrypoint import hydra_task
from federation.flower.launch import split_overrides, start_coordinator
from federation.settings import check_training_config


@hydra.main(config_path="../conf", config_name="deploy/coordinator", version_base="1.3")
@hydra_task
def main(cfg: DictConfig) -> None:
    check_training_config(cfg, paths=False)  # the data lie at the sites
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the SuperLink on the way out
    consortium, own = split_overrides(list(HydraConfig.get().overrides.task))
    service = start_coordinator(cfg)
    try:
        status = service.wait(service.submit(consortium, own))
    finally:
        service.stop()
    error = f" ({status['error']})" if status.get("error") else ""
    logging.getLogger(__name__).info("run %s%s; results in %s", status["state"], error, service.run_dir)
    sys.exit(0 if status["state"] == "finished" else 1)


if __name__ == "__main__":
    main()
