"""The deployment part of a run's summary: each site's choice, and deployed minus local-only with its noise interval."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from federation.adaptation.comparison import correct, paired_difference, verdict

ALL = "all test patients"


def add_deployment(summary: dict, deployments: Mapping, predictions: Mapping, resamples: int, seed: int) -> dict:
    """summary + `deployment` (site -> choice record) + `deployed_vs_local` (site -> paired difference of per-patient accuracy)."""
    records = {site: d.record for site, d in deployments.items()}
    return {**summary, "deployment": records, "deployed_vs_local": compare([predictions], resamples, seed)}


def compare(runs: Sequence[Mapping], resamples: int, seed: int) -> dict:
    """Per site and over all test patients: deployed minus local-only, patients of every run (seed) pooled in pairs."""
    if not all("deployed" in p and "local" in p for p in runs):
        return {}
    sites = list(runs[0]["deployed"])
    per_site = {site: [_pair(run, site) for run in runs] for site in sites}
    out = {}
    for site, pairs in per_site.items():
        out[site] = _difference(pairs, resamples, seed)
    out[ALL] = _difference([p for pairs in per_site.values() for p in pairs], resamples, seed)
    return out


def _pair(predictions: Mapping, site: str) -> tuple[np.ndarray, np.ndarray]:
    return correct(*predictions["deployed"][site]), correct(*predictions["local"][site])


def _difference(pairs: list[tuple[np.ndarray, np.ndarray]], resamples: int, seed: int) -> dict:
    deployed = np.concatenate([a for a, _ in pairs])
    local = np.concatenate([b for _, b in pairs])
    difference = paired_difference(deployed, local, resamples, seed)
    return {**{k: round(v, 4) if isinstance(v, float) else v for k, v in difference.items()}, "verdict": verdict(difference)}


def deployment_table(summary: dict) -> str:
    """Markdown: what each site deployed (per seed where there are several) and deployed minus local-only accuracy."""
    records = summary.get("deployment") or {}
    comparison = summary.get("deployed_vs_local") or {}
    if not records:
        return ""
    by_seed = records if all(isinstance(k, str) and k.startswith("seed ") for k in records) else {"": records}
    rows = ["| site | deployed (reason) | deployed − local-only accuracy [95% interval] |", "| --- | --- | --- |"]
    for site in next(iter(by_seed.values())):
        choices = "; ".join(f"{seed + ': ' if seed else ''}{r[site]['deployed']} ({r[site]['reason']})" for seed, r in by_seed.items())
        rows.append(f"| {site} | {choices} | {_fmt(comparison.get(site))} |")
    if ALL in comparison:
        rows.append(f"| **{ALL}** | | {_fmt(comparison[ALL])} |")
    criteria = sorted({r.get("criterion") for per_site in by_seed.values() for r in per_site.values()} - {None})
    on = f" by {', '.join(criteria).replace('_', ' ')}" if criteria else ""
    return f"\nWhat each site deployed, chosen on its own validation split{on} (test patients never used):\n\n" + "\n".join(rows) + "\n"


def _fmt(difference: dict | None) -> str:
    if not difference:
        return "n/a"
    return f"{difference['mean']:+.3f} [{difference['low']:+.3f}, {difference['high']:+.3f}] {difference['verdict']}"
