"""Variant pathogenicity on held-out genes: federated, local-only and pooled models beside every single in-silico score.

    python benchmarks/vus.py                                  # the shared ClinVar table, 3 training seeds
    python benchmarks/vus.py data.path=/path/to/table.tsv seeds=[0]

Runs `experiment=vus` (any Hydra override may follow) into outputs/benchmarks/vus/<time>/
and writes its tables, with the command and the wall time, to benchmarks/results/vus.md.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from federation.driver.experiment import run_experiment  # noqa: E402
from federation.tasks.vus.report import vus_table  # noqa: E402


def main(overrides: list[str]) -> Path:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=vus", "progress=false", *overrides])
    out_dir = Path(cfg.paths.output_dir) / "benchmarks" / "vus" / time.strftime("%Y-%m-%d_%H-%M-%S")
    start = time.perf_counter()
    summary = run_experiment(cfg, out_dir)
    seconds = time.perf_counter() - start
    command = " ".join(["python benchmarks/vus.py", *overrides])
    text = f"`{command}` ({seconds:.0f} s, run folder {out_dir})\n\n" + vus_table(summary["vus"])
    target = ROOT / "benchmarks" / "results" / "vus.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    print(f"wrote {target}")
    return target


if __name__ == "__main__":
    main(sys.argv[1:])
