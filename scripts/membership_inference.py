"""Membership-inference attack (Yeom et al. 2018) on the federated model, with and without DP: a markdown table.

    python scripts/membership_inference.py data.root=../shared/data/heart
"""
from __future__ import annotations

import logging
import statistics
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from federation.entrypoint import hydra_task
from federation.outputs import write_json, write_text
from federation.privacy.membership import attack_federation
from federation.settings import check_privacy, check_training_config
from federation.training_env import quiet_lightning
from modalities.consortium import load_consortium

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="membership_inference")
@hydra_task
def main(cfg: DictConfig) -> None:
    check_training_config(cfg)
    for name in cfg.attack.settings:
        check_privacy(cfg, f"attack.settings.{name}")
    quiet_lightning()
    consortium = load_consortium(cfg.data, seed=cfg.seed)
    seeds = list(cfg.seeds or [cfg.seed])
    results = {name: [attack_federation(cfg, setting, consortium, s) for s in seeds] for name, setting in cfg.attack.settings.items()}
    table = markdown(results, cfg.attack.target_auc)
    out = Path(HydraConfig.get().runtime.output_dir)
    write_json(out / "membership_inference.json", results)
    write_text(out / "membership_inference.md", table)
    print(table)


def markdown(results: dict[str, list[dict]], target: float) -> str:
    rows = ["| privacy | epsilon | attack AUC | attack advantage | test accuracy |", "| --- | --- | --- | --- | --- |"]
    for name, runs in results.items():
        cells = [_mean_sd([r[k] for r in runs]) for k in ("epsilon", "auc", "advantage", "test_accuracy")]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + f"\n\nMean ± sd over {len(next(iter(results.values())))} seed(s); target: AUC <= {target} under DP.\n"


def _mean_sd(values: list[float]) -> str:
    if any(v == float("inf") for v in values):
        return "inf"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


if __name__ == "__main__":
    main()
