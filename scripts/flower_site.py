"""One site (hospital) of the consortium on its own machine: a SuperNode that trains on this site's data only.

    python scripts/flower_site.py deploy.site=cleveland deploy.superlink=coordinator.example.org:9092 \
        deploy.data_path=/data/heart/processed.cleveland.data deploy.certificates=/etc/rarefed

Connects to the coordinator (TLS with the consortium CA, authenticated by this site's key),
retries with backoff while the coordinator is unreachable, and runs until stopped. Overrides
other than `deploy.*` (e.g. trainer=gpu) apply to this site's training only.
"""
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from federation.entrypoint import hydra_task
from federation.flower.launch import follow_site, split_overrides, start_site
from federation.settings import check_training_config, existing


@hydra.main(config_path="../conf", config_name="deploy/site", version_base="1.3")
@hydra_task
def main(cfg: DictConfig) -> None:
    check_training_config(cfg, paths=False)  # the consortium's settings, as far as this site can check them
    if cfg.deploy.data_path:
        existing("deploy.data_path", cfg.deploy.data_path, folder=Path(cfg.deploy.data_path).is_dir())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the SuperNode on the way out
    local, _ = split_overrides(list(HydraConfig.get().overrides.task))
    node = start_site(cfg, local)
    print(f"site {cfg.deploy.site}: SuperNode pid {node.pid} connecting to {cfg.deploy.superlink} (log {node.log_path})", flush=True)
    try:
        code = follow_site(node, cfg.deploy)
    finally:
        node.stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
