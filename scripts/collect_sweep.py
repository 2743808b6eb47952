"""One markdown table from a Hydra multirun: each job's overrides and its summary metrics.

    python scripts/collect_sweep.py outputs/multiruns/<date>            # federated, every metric of the run
    python scripts/collect_sweep.py <dir> --approach pooled --metrics accuracy macro_auroc --out sweep.md

Overrides every job shares are listed once above the table; each row shows its own.
Works for whichever launcher ran the sweep (basic, hydra/launcher=parallel or slurm):
every job folder holds `.hydra/overrides.yaml` and, once it finished, `summary.json`.
A job without a summary (failed, still running) gets a row saying so.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

from federation.entrypoint import script
from federation.settings import existing

OVERRIDES = Path(".hydra") / "overrides.yaml"


def job_folders(sweep_dir: Path) -> list[Path]:
    """Job folders (those with Hydra's overrides record), in job-number order where they are numbered."""
    folders = [path.parent.parent for path in sweep_dir.rglob(str(OVERRIDES))]
    return sorted(folders, key=lambda f: (0, int(f.name), "") if f.name.isdigit() else (1, 0, str(f)))


def job_row(folder: Path, block: str, approach: str, metrics: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """The job's overrides and, per metric, its value (with the sd over seeds where the job had several)."""
    overrides = yaml.safe_load((folder / OVERRIDES).read_text()) or []
    summary_path = folder / "summary.json"
    if not summary_path.exists():
        return overrides, {}
    summary = json.loads(summary_path.read_text())
    values = summary.get(block, {}).get(approach, {})
    sds = summary.get("sd", {}).get(block, {}).get(approach, {})
    return overrides, {m: _cell(values[m], sds.get(m)) for m in metrics or summary.get("metric_names", list(values)) if m in values}


def sweep_table(sweep_dir: Path, block: str = "overall", approach: str = "federated", metrics: list[str] | None = None) -> str:
    folders = job_folders(sweep_dir)
    if not folders:
        raise FileNotFoundError(f"{sweep_dir}: no Hydra job folders (no */{OVERRIDES}); is this a multirun folder?")
    rows = [(folder, *job_row(folder, block, approach, metrics)) for folder in folders]
    names = metrics or list(dict.fromkeys(m for _, _, values in rows for m in values))
    shared = [o for o in rows[0][1] if all(o in overrides for _, overrides, _ in rows)] if len(rows) > 1 else []
    header = ["job", "overrides", "status", *[f"{approach} {m}" for m in names]]
    lines = [f"Overrides of every job: `{' '.join(shared)}`", ""] if shared else []
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for folder, overrides, values in rows:
        own = " ".join(o for o in overrides if o not in shared) or "(none)"
        status = "done" if (folder / "summary.json").exists() else "no summary.json (failed or unfinished)"
        lines.append("| " + " | ".join([folder.name, own, status, *[values.get(m, "") for m in names]]) + " |")
    return "\n".join(lines) + "\n"


def _cell(value, sd) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if sd is None or math.isnan(sd) else f"{value:.3f} ± {sd:.3f}"


@script
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder (hydra.sweep.dir)")
    parser.add_argument("--approach", default="federated", help="federated, local, pooled, personalised, ...")
    parser.add_argument("--block", default="overall", help="overall (all test patients) or mean_over_sites")
    parser.add_argument("--metrics", nargs="*", help="metric names; default: all of the run's")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    existing("sweep_dir", args.sweep_dir, folder=True)
    table = sweep_table(args.sweep_dir, args.block, args.approach, args.metrics)
    if args.out:
        args.out.write_text(table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
