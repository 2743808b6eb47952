"""The sweep report's plots (matplotlib, written as PNG files; nothing is fetched):

- `params.png`: each swept hyper-parameter against the objective, one panel each, the best job marked;
- `sites.png`: per-site bars of the objective's metric for the best jobs;
- `history.png`, `importances.png`: the Optuna study's history and its parameters' importances
  (fANOVA, Optuna's default), when the sweep was a search.

A plot that cannot be drawn (one job, no numeric figure, a study of one trial) is left out,
and the report says why rather than failing: the table is still worth having.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or opened
import matplotlib.pyplot as plt  # noqa: E402

from federation.sweeps.table import Job  # noqa: E402

log = logging.getLogger(__name__)
PANELS_PER_ROW = 3
LOG_SPAN = 20.0  # a positive numeric parameter spanning more than this factor is drawn on a log axis


@dataclass(frozen=True)
class Target:
    """The figure the report ranks jobs by: `block` (overall, mean_over_sites) / approach / metric."""

    block: str
    approach: str
    metric: str
    maximize: bool = True
    data: str = ""  # "validation" for a search's trials

    @property
    def label(self) -> str:
        return f"{self.approach} {self.metric} ({self.block.replace('_', ' ')}{', ' + self.data if self.data else ''})"


def swept_values(jobs: Sequence[Job]) -> dict[str, list[str | None]]:
    """Per override key that differs between jobs, each job's value (None where a job does not set it)."""
    per_job = [dict(o.split("=", 1) for o in job.overrides if "=" in o) for job in jobs]
    keys = dict.fromkeys(k for overrides in per_job for k in overrides)
    swept = {k: [overrides.get(k) for overrides in per_job] for k in keys}
    return {k: values for k, values in swept.items() if len(set(values)) > 1}


def ranked(jobs: Sequence[Job], target: Target) -> list[Job]:
    """Jobs with a figure, best first."""
    scored = [job for job in jobs if job.value(target.block, target.approach, target.metric) is not None]
    return sorted(scored, key=lambda j: j.value(target.block, target.approach, target.metric), reverse=target.maximize)


def plot_params(jobs: Sequence[Job], target: Target, path: Path) -> str | None:
    """One panel per swept key: its value against the objective. Returns why not, if it cannot be drawn."""
    swept = swept_values(jobs)
    values = [job.value(target.block, target.approach, target.metric) for job in jobs]
    if not swept or sum(v is not None for v in values) < 2:
        return "fewer than two finished jobs, or nothing differs between them"
    best = ranked(jobs, target)[0]
    columns = min(PANELS_PER_ROW, len(swept))
    rows = math.ceil(len(swept) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows), squeeze=False, sharey=True)
    for ax, (key, settings) in zip(axes.flat, swept.items()):
        points = [(s, v, job is best) for s, v, job in zip(settings, values, jobs) if v is not None and s is not None]
        _scatter(ax, points)
        ax.set_xlabel(key, fontsize=8)
    for ax in list(axes.flat)[len(swept):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(target.label, fontsize=8)
    fig.suptitle("each swept hyper-parameter against the objective (red: the best job)", fontsize=9)
    _save(fig, path)
    return None


def plot_sites(jobs: Sequence[Job], target: Target, path: Path, top: int = 3) -> str | None:
    """Grouped bars: each site's figure for the `top` best jobs."""
    best = [job for job in ranked(jobs, target) if job.site_values(target.approach, target.metric)][:top]
    if not best:
        return f"no job reports per-site {target.approach} {target.metric}"
    sites = list(best[0].site_values(target.approach, target.metric))
    width = 0.8 / len(best)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(sites) * len(best) / 2), 3.4))
    for i, job in enumerate(best):
        per_site = job.site_values(target.approach, target.metric)
        ax.bar([x + i * width for x in range(len(sites))], [per_site.get(s, math.nan) for s in sites], width,
               label=f"job {job.name}: {target.approach} {target.metric} {job.value(target.block, target.approach, target.metric):.3f}")
    ax.set_xticks([x + width * (len(best) - 1) / 2 for x in range(len(sites))], sites, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{target.approach} {target.metric}", fontsize=8)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=min(3, len(best)), frameon=False)
    ax.set_title(f"per site, the {len(best)} best jobs", fontsize=9)
    _save(fig, path)
    return None


def plot_study(storage: str, study_name: str, target_name: str, out_dir: Path) -> dict[str, str | None]:
    """The study's history and parameter importances (first objective), each a file or the reason it is missing."""
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    first = lambda trial: trial.values[0]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    drawn: dict[str, str | None] = {}
    for name, draw, needs in (
        ("history.png", lambda: optuna_plots.plot_optimization_history(study, target=first, target_name=target_name), 1),
        ("importances.png", lambda: optuna_plots.plot_param_importances(study, target=first, target_name=target_name), 2),
    ):
        if len(done) < needs:
            drawn[name] = f"needs at least {needs} finished trials"
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                ax = draw()
            except (ValueError, RuntimeError) as error:  # e.g. no parameter varies
                drawn[name] = f"not drawn: {' '.join(str(error).splitlines())[:200]}"
                continue
        ax.figure.set_size_inches(7.0, 4.0)
        ax.set_ylabel(ax.get_ylabel(), fontsize=8)
        if ax.get_legend() is not None:
            ax.legend(loc="best", fontsize=8)  # Optuna puts it outside the axes, which squeezes them
        _save(ax.figure, out_dir / name)
        drawn[name] = None
    return drawn


def _scatter(ax, points: list[tuple[str, float, bool]]) -> None:
    numbers = [_number(s) for s, _, _ in points]
    if all(n is not None for n in numbers):
        ax.scatter(numbers, [v for _, v, _ in points], c=["red" if b else "tab:blue" for *_, b in points], s=18)
        if min(numbers) > 0 and max(numbers) / min(numbers) > LOG_SPAN:
            ax.set_xscale("log")
        return
    levels = sorted({s for s, _, _ in points})
    xs = [levels.index(s) + 0.08 * ((i % 5) - 2) for i, (s, _, _) in enumerate(points)]  # a little jitter per level
    ax.scatter(xs, [v for _, v, _ in points], c=["red" if b else "tab:blue" for *_, b in points], s=18)
    ax.set_xticks(range(len(levels)), levels, rotation=30, ha="right", fontsize=7)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
