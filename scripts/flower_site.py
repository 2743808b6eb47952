"""One site (hospital) of the consortium on its own machine: a SuperNode that trains on this site's data only.

    python scripts/flower_site.py deploy.site=cleveland deploy.superlink=coordinator.example.org:9092 \
        deploy.data_path=/data/heart/processed.cleveland.data deploy.certificates=/etc/rarefed

Connects to the coordinator (TLS with the consortium CA, authenticated by this site's key),
retries with backoff while the coordinator is unreachable, and runs until stopped. Overrides
other than `deploy.*` (e.g. trainer=gpu) apply to this site's training only.
"""
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from federation.flower.launch import follow_site, split_overrides, start_site


@hydra.main(config_path="../conf", config_name="deploy/site", version_base="1.3")
def main(cfg: DictConfig) -> None:
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
