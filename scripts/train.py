"""Main job: federated training of the multimodal model across the configured consortium.

    python scripts/train.py                       # embedded synthetic consortium, FedAvg
    python scripts/train.py -m model/fusion=mean,attention,gated
    python scripts/train.py -m experiment=heart_flamby hparams_search=heart   # a search on validation data, then test once

The config is checked whole before any data is read (federation/settings.py); an expected
error is one line on stderr, exit status 2 for a setting and 1 for the data (federation/entrypoint.py).
"""
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import modalities.image_sites  # noqa: F401  registers the config resolvers that read image archives' headers
from federation.driver.experiment import run_experiment
from federation.entrypoint import hydra_task
from federation.sweeps.objective import trial_result


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@hydra_task
def main(cfg: DictConfig) -> float | tuple[float, ...]:
    summary = run_experiment(cfg, Path(HydraConfig.get().runtime.output_dir))
    return trial_result(summary, cfg)  # the sweeper's objective: `search`'s aggregates, else overall federated


if __name__ == "__main__":
    main()
