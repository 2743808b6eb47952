"""A Hydra multirun's job folders read back: each job's overrides and summary, and the markdown table of them.

Works for whichever launcher or sweeper ran the sweep: every job folder holds
`.hydra/overrides.yaml` and, once it finished, `summary.json`. A job without a summary
(failed, still running) gets a row saying so. A search's one test run of its best trial
(`test_of_best/`) is never a row beside the trials: it is reported on its own
(federation/sweeps/search.py).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from federation.sweeps.layout import RESULTS, TEST_JOB

OVERRIDES = Path(".hydra") / "overrides.yaml"


@dataclass
class Job:
    folder: Path
    overrides: list[str]
    summary: dict | None

    @property
    def name(self) -> str:
        return self.folder.name

    def value(self, block: str, approach: str, metric: str) -> float | None:
        """The job's figure (mean over seeds), or None if it has no summary or no such figure."""
        if self.summary is None:
            return None
        value = self.summary.get(block, {}).get(approach, {}).get(metric)
        return None if value is None or math.isnan(value) else float(value)

    def site_values(self, approach: str, metric: str) -> dict[str, float]:
        sites = (self.summary or {}).get("sites", {})
        return {site: float(entry[approach][metric]) for site, entry in sites.items() if metric in entry.get(approach, {})}


def job_folders(sweep_dir: Path) -> list[Path]:
    """Job folders (those with Hydra's overrides record), in job-number order where they are numbered."""
    folders = [path.parent.parent for path in sweep_dir.rglob(str(OVERRIDES)) if path.parent.parent.name != TEST_JOB]
    return sorted(folders, key=lambda f: (0, int(f.name), "") if f.name.isdigit() else (1, 0, str(f)))


def read_jobs(sweep_dir: Path) -> list[Job]:
    folders = job_folders(sweep_dir)
    if not folders:
        raise FileNotFoundError(f"{sweep_dir}: no Hydra job folders (no */{OVERRIDES}); is this a multirun folder?")
    return [_job(folder) for folder in folders]


def search_results(sweep_dir: Path) -> dict | None:
    """The search's record (optimization_results.yaml), when the sweep was a search."""
    path = sweep_dir / RESULTS
    return yaml.safe_load(path.read_text()) if path.exists() else None


def job_row(folder: Path, block: str, approach: str, metrics: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """The job's overrides and, per metric, its value (with the sd over seeds where the job had several)."""
    job = _job(folder)
    if job.summary is None:
        return job.overrides, {}
    values = job.summary.get(block, {}).get(approach, {})
    sds = job.summary.get("sd", {}).get(block, {}).get(approach, {})
    names = metrics or job.summary.get("metric_names", list(values))
    return job.overrides, {m: _cell(values[m], sds.get(m)) for m in names if m in values}


def sweep_table(sweep_dir: Path, block: str = "overall", approach: str = "federated", metrics: list[str] | None = None) -> str:
    jobs = read_jobs(sweep_dir)
    rows = [(job.folder, *job_row(job.folder, block, approach, metrics)) for job in jobs]
    names = metrics or list(dict.fromkeys(m for _, _, values in rows for m in values))
    shared = shared_overrides([overrides for _, overrides, _ in rows])
    header = ["job", "overrides", "status", *[f"{approach} {m}" for m in names]]
    lines = [f"Overrides of every job: `{' '.join(shared)}`", ""] if shared else []
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for folder, overrides, values in rows:
        own = " ".join(o for o in overrides if o not in shared) or "(none)"
        status = "done" if (folder / "summary.json").exists() else "no summary.json (failed or unfinished)"
        lines.append("| " + " | ".join([folder.name, own, status, *[values.get(m, "") for m in names]]) + " |")
    return "\n".join(lines) + "\n"


def search_section(results: dict) -> str:
    """What a search chose, on which validation figures, and its one test run, as markdown."""
    objective, best, test = results["objective"], results["best"], results["test"]
    fmt = lambda values: ", ".join(f"{k} {v:.3f}" for k, v in values.items())
    params = " ".join(f"{k}={_short(v)}" for k, v in best["params"].items())
    return "\n".join([
        f"Search ({results['sampler']}, trials: {results['trials']}): objective {objective['approach']} {objective['metric']} on "
        f"validation data over sites ({', '.join(objective['aggregates'])})"
        + (f", each trial the mean of {len(objective['folds'])} validation folds." if objective.get("folds") else "."),
        "",
        f"- best trial {best['trial']} (job {best['job']}): `{params}`",
        f"- validation: {fmt(best['validation'])}",
        f"- test, run once with `{' '.join(test['overrides'][len(results['fixed']) + len(best['params']):])}` "
        f"(job folder `{test['job']}/`): {fmt(test['values'])}",
    ]) + "\n"


def shared_overrides(all_overrides: list[list[str]]) -> list[str]:
    if len(all_overrides) < 2:
        return []
    return [o for o in all_overrides[0] if all(o in overrides for overrides in all_overrides)]


def _job(folder: Path) -> Job:
    overrides = yaml.safe_load((folder / OVERRIDES).read_text()) or []
    summary_path = folder / "summary.json"
    return Job(folder, overrides, json.loads(summary_path.read_text()) if summary_path.exists() else None)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _cell(value, sd) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if sd is None or math.isnan(sd) else f"{value:.3f} ± {sd:.3f}"
