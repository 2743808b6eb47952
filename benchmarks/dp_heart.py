"""Accuracy against epsilon on Fed-Heart-Disease (FLamby's protocol), beside FLamby's DP figures.

    python benchmarks/dp_heart.py                          # epsilon 0.1, 1, inf; 3 seeds
    python benchmarks/dp_heart.py --seeds 0 1 2 3 4 --site-dp

FedAvg over the four hospitals as experiment=heart_flamby runs it (SGD 1e-3, 100
local steps, 15 rounds, batch 4), with sample-level DP-SGD at every site
(conf/privacy/dp_sgd.yaml: max_grad_norm 1, delta 1e-3, noise calibrated per site
to spend epsilon over all rounds). epsilon = inf is plain FedAvg (no clipping, no
noise). Accuracy is the mean over the four centres' test sets, as FLamby reports it.
`--site-dp` adds site-level DP (conf/privacy/site_dp.yaml) at the same epsilons.
The table goes to benchmarks/results/dp_heart.md and to stdout.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from federation.privacy.membership import attack_federation  # noqa: E402
from federation.training_env import quiet_lightning  # noqa: E402
from modalities.consortium import load_consortium  # noqa: E402

FLAMBY = {math.inf: 0.7125, 1.0: 0.7015, 0.1: 0.6056}  # FLamby's FedAvg on Fed-Heart-Disease with and without DP


def privacy_setting(kind: str, epsilon: float) -> dict:
    if math.isinf(epsilon):
        return {"kind": "none"}
    with initialize_config_dir(str(ROOT / "conf" / "privacy"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(kind))
    return cfg | {"epsilon": epsilon}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.1, 1.0, math.inf])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--site-dp", action="store_true")
    parser.add_argument("--data-root", default=None, help="folder of the four processed.*.data files")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dp_heart.md")
    args = parser.parse_args()
    quiet_lightning()
    overrides = ["experiment=heart_flamby", "progress=false"] + ([f"data.root={args.data_root}"] if args.data_root else [])
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    consortium = load_consortium(cfg.data, seed=cfg.seed)
    kinds = ["dp_sgd"] + (["site_dp"] if args.site_dp else [])
    rows = ["| privacy | target epsilon | epsilon spent | accuracy (mean over centres) | membership AUC | FLamby FedAvg | wall (s) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for kind in kinds:
        for epsilon in sorted(args.epsilons, reverse=True):
            if kind == "site_dp" and math.isinf(epsilon):
                continue
            started = time.perf_counter()
            runs = [attack_federation(cfg, privacy_setting(kind, epsilon), consortium, seed) for seed in args.seeds]
            wall = time.perf_counter() - started
            name = "none (FedAvg)" if math.isinf(epsilon) else kind
            reference = f"{FLAMBY[epsilon]:.4f}" if kind == "dp_sgd" and epsilon in FLAMBY else ""
            rows.append(f"| {name} | {epsilon:g} | {_cell(runs, 'epsilon')} | {_cell(runs, 'centre_accuracy')} | {_cell(runs, 'auc')} | {reference} | {wall:.0f} |")
    table = "\n".join(rows) + f"\n\nMean ± sd over seeds {args.seeds}; delta 1e-3; membership AUC: loss-threshold attack (scripts/membership_inference.py).\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)


def _cell(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs]
    if any(math.isinf(v) for v in values):
        return "inf"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


if __name__ == "__main__":
    main()
