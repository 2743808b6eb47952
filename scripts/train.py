"""Main job: federated training of the multimodal model across the configured consortium.

    python scripts/train.py                       # embedded synthetic consortium, FedAvg
    python scripts/train.py -m model/fusion=mean,attention,gated

The config is checked whole before any data is read (federation/settings.py); an expected
error is one line on stderr, exit status 2 for a setting and 1 for the data (federation/entrypoint.py).
"""
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import modalities.image_sites  # noqa: F401  registers the config resolvers that read image archives' headers
from federation.entrypoint import hydra_task
from federation.experiment import run_experiment


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@hydra_task
def main(cfg: DictConfig) -> float:
    summary = run_experiment(cfg, Path(HydraConfig.get().runtime.output_dir))
    return summary["overall"]["federated"][summary["metric_names"][0]]  # the sweeper's objective


if __name__ == "__main__":
    main()
