"""The sweep report: the table of jobs, what a search chose and its one test run, and the plots (federation/sweeps/plots.py).

Written to `<sweep>/report/` (`sweep.md` links the plots) by scripts/collect_sweep.py. For a
search the figures ranked and plotted are its objective's: the validation metric, mean over
sites; the test figures of its best trial appear only in their own section.
"""
from __future__ import annotations

from pathlib import Path

from federation.sweeps.layout import REPORT, STUDY_DB
from federation.sweeps.plots import Target, plot_params, plot_sites, plot_study
from federation.sweeps.table import read_jobs, search_results, search_section


def report_target(sweep_dir: Path, block: str | None, approach: str, metrics: list[str] | None) -> Target:
    """A search's objective (unless asked otherwise); else the first metric asked for (or the jobs' first) of `block` / `approach`."""
    results = search_results(sweep_dir)
    if results and not metrics:
        objective = results["objective"]
        return Target(block or "mean_over_sites", objective["approach"], objective["metric"], objective["directions"][0] == "maximize",
                      objective.get("data", ""))
    block = block or "overall"
    if metrics:
        return Target(block, approach, metrics[0])
    names = next((job.summary.get("metric_names") for job in read_jobs(sweep_dir) if job.summary), None) or ["accuracy"]
    return Target(block, approach, names[0])


def write_report(sweep_dir: Path, table: str, target: Target, out_dir: Path | None = None) -> Path:
    """Plots and `sweep.md` into `out_dir` (default `<sweep>/report/`); returns the markdown file."""
    out_dir = out_dir or sweep_dir / REPORT
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = read_jobs(sweep_dir)
    results = search_results(sweep_dir)
    missing = {"params.png": plot_params(jobs, target, out_dir / "params.png"),
               "sites.png": plot_sites(jobs, target, out_dir / "sites.png")}
    if results and (sweep_dir / STUDY_DB).exists():
        missing |= plot_study(f"sqlite:///{(sweep_dir / STUDY_DB).resolve()}", results["study"], target.label, out_dir)
    lines = [f"# Sweep {sweep_dir.name}", ""]
    if results:
        lines += [search_section(results), ""]
    lines += [f"Jobs ranked and plotted by {target.label}.", "", table, ""]
    captions = {"params.png": "Each swept hyper-parameter against the objective", "sites.png": "Per site, the best jobs",
                "history.png": "The study's history", "importances.png": "Parameter importances (fANOVA)"}
    for name, caption in captions.items():
        if name not in missing:
            continue
        lines.append(f"![{caption}]({name})" if missing[name] is None else f"{caption}: not drawn ({missing[name]}).")
        lines.append("")
    path = out_dir / "sweep.md"
    path.write_text("\n".join(lines))
    return path
