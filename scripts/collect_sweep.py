"""The report of a Hydra multirun or search: a markdown table of each job's overrides and summary metrics, and plots.

    python scripts/collect_sweep.py outputs/multiruns/<date>            # federated, every metric of the run
    python scripts/collect_sweep.py <dir> --approach pooled --metrics accuracy macro_auroc --out sweep.md
    python scripts/collect_sweep.py <dir> --no-plots                    # the table only

Overrides every job shares are listed once above the table; each row shows its own.
Works for whichever launcher ran the sweep (basic, hydra/launcher=parallel or slurm) and
for a search (hparams_search=<name>). Plots and `sweep.md` go to `<dir>/report/`: each swept
hyper-parameter against the objective, per-site bars of the best jobs, and for a search the
study's history and parameter importances, with its best trial's one test run
(federation/sweeps/report.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from federation.entrypoint import script
from federation.settings import existing
from federation.sweeps.report import report_target, write_report
from federation.sweeps.table import job_folders, job_row, sweep_table  # noqa: F401  (re-exported: tests and notebooks use them)


@script
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder (hydra.sweep.dir)")
    parser.add_argument("--approach", default="federated", help="federated, local, pooled, personalised, ...")
    parser.add_argument("--block", help="overall (all test patients) or mean_over_sites; default: a search's "
                                            "mean_over_sites, else overall")
    parser.add_argument("--metrics", nargs="*", help="metric names; default: all of the run's")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--no-plots", action="store_true", help="the table only: no report folder")
    args = parser.parse_args(argv)
    existing("sweep_dir", args.sweep_dir, folder=True)
    target = report_target(args.sweep_dir, args.block, args.approach, args.metrics)
    table = sweep_table(args.sweep_dir, target.block, target.approach, args.metrics)
    if args.out:
        args.out.write_text(table)
    print(table, end="")
    if not args.no_plots:
        report = write_report(args.sweep_dir, table, target)
        print(f"report: {report}", file=sys.stderr)  # stdout stays the table (--out writes the same)
    return 0


if __name__ == "__main__":
    sys.exit(main())
