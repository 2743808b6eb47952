"""Summary and tables of diagnosis runs over seeds: overall, per site, and per-site gains with bootstrap intervals.

A site "is worse off" under the federation only when the 95% interval of the paired
difference (federated minus the other approach, over that site's test patients of
every seed) lies wholly below 0; otherwise the difference is within noise or a gain.
"""
from __future__ import annotations

import numpy as np

from federation.tasks.diagnosis.experiment import APPROACHES, SeedResult
from federation.tasks.diagnosis.metrics import COMPARED, METRICS, paired_bootstrap, summarise

RANKERS = ("likelihood", "resnik")
NAMES = {
    "resnik": "Resnik best match (training-free)",
    "likelihood": "likelihood ratio (training-free)",
    "local": "local-only",
    "federated": "federated",
    "deployed": "deployed (each site's choice on validation)",
    "pooled": "pooled",
}


def build_summary(results: list[SeedResult], seeds: list[int], resamples: int = 2000) -> dict:
    sites = list(results[0].hits["federated"])
    per_seed_overall = [{a: summarise(_all(r.hits[a])) for a in APPROACHES} for r in results]
    overall = {a: {m: _mean_sd([s[a][m] for s in per_seed_overall]) for m in METRICS} for a in APPROACHES}
    per_site = {site: {a: summarise(_seeds(results, a, site)) for a in APPROACHES} for site in sites}
    gains = {site: _gains(results, site, resamples) for site in sites}
    gains["all test patients"] = _gains(results, None, resamples)
    deployed = {site: _versus(results, "deployed", "local", site, resamples) for site in sites}
    deployed["all test patients"] = _versus(results, "deployed", "local", None, resamples)
    return {
        "task": "open differential diagnosis",
        "seeds": seeds,
        "metric_names": list(METRICS),
        "overall": overall,
        "sites": {
            s: {"n_train": int(np.mean([r.n_train[s] for r in results])), "n_test": int(len(_seeds(results, "federated", s)["top1"])), **per_site[s]}
            for s in sites
        },
        "federated_minus": gains,
        "deployed_minus_local": deployed,
        "deployment": {f"seed {s}": r.facts.get("deployment", {}) for s, r in zip(seeds, results)},
        "facts": results[-1].facts,
        "fallbacks": results[-1].quality.get("diagnosis_fallbacks", {}),
    }


def _all(per_site: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    first = next(iter(per_site.values()))
    return {m: np.concatenate([h[m] for h in per_site.values()]) for m in first}


def _seeds(results: list[SeedResult], approach: str, site: str | None) -> dict[str, np.ndarray]:
    """A site's (or, with None, every site's) test-patient values over all seeds, in one fixed order."""
    parts = [_all(r.hits[approach] if site is None else {site: r.hits[approach][site]}) for r in results]
    return {m: np.concatenate([p[m] for p in parts]) for m in METRICS}


def _gains(results: list[SeedResult], site: str | None, resamples: int) -> dict:
    federated = _seeds(results, "federated", site)
    out = {}
    for other in ("local", *RANKERS):
        values = _seeds(results, other, site)
        out[other] = {m: paired_bootstrap(federated[m], values[m], resamples, seed=17) for m in COMPARED}
    return out


def _versus(results: list[SeedResult], approach: str, other: str, site: str | None, resamples: int) -> dict:
    a, b = _seeds(results, approach, site), _seeds(results, other, site)
    return {m: paired_bootstrap(a[m], b[m], resamples, seed=17) for m in COMPARED}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values)) if len(values) > 1 else 0.0


def markdown(summary: dict, title: str = "") -> str:
    lines = [f"### {title}", ""] if title else []
    seeds = summary["seeds"]
    lines += [f"All test patients, mean ± sd over seeds {seeds}:", "", "| approach | " + " | ".join(METRICS) + " |", "| --- |" + " --- |" * len(METRICS)]
    for a in APPROACHES:
        lines.append(f"| {NAMES[a]} | " + " | ".join(_cell(summary["overall"][a][m]) for m in METRICS) + " |")
    lines += [
        "",
        "Per site (test patients of all seeds): top-1 / open top-1 / open top-10",
        "",
        "| site | n_train | n_test | " + " | ".join(NAMES[a] for a in APPROACHES) + " |",
        "| --- | --- | --- |" + " --- |" * len(APPROACHES),
    ]
    for site, entry in summary["sites"].items():
        cells = [" / ".join(f"{entry[a][m]:.3f}" for m in COMPARED) for a in APPROACHES]
        lines.append(f"| {site} | {entry['n_train']} | {entry['n_test']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Federated minus each other approach, paired bootstrap over test patients (mean [95% interval]); **worse** = interval wholly below 0:",
        "",
        "| site | vs | " + " | ".join(COMPARED) + " |",
        "| --- | --- |" + " --- |" * len(COMPARED),
    ]
    for site, versus in summary["federated_minus"].items():
        for other, metrics in versus.items():
            lines.append(f"| {site} | {NAMES[other]} | " + " | ".join(_gain(*metrics[m]) for m in COMPARED) + " |")
    if summary.get("deployed_minus_local"):
        lines += [
            "",
            "Deployed minus local-only (what each site chose on its validation publications; choices per seed in the last column):",
            "",
            "| site | " + " | ".join(COMPARED) + " | deployed |",
            "| --- |" + " --- |" * (len(COMPARED) + 1),
        ]
        for site, metrics in summary["deployed_minus_local"].items():
            chosen = ", ".join(f"{d[site]['deployed']}" for d in summary.get("deployment", {}).values() if site in d)
            lines.append(f"| {site} | " + " | ".join(_gain(*metrics[m]) for m in COMPARED) + f" | {chosen} |")
    return "\n".join(lines) + "\n"


def worse_sites(summary: dict) -> list[str]:
    """'site vs approach: metric' wherever the federated model (or a site's deployed one, vs local-only) is worse beyond noise."""
    federated = [
        f"{site} vs {other}: {m}"
        for site, versus in summary["federated_minus"].items()
        for other, metrics in versus.items()
        for m, (_, _, high) in metrics.items()
        if high < 0
    ]
    deployed = [
        f"{site} deployed vs local-only: {m}"
        for site, metrics in summary.get("deployed_minus_local", {}).items()
        for m, (_, _, high) in metrics.items()
        if high < 0
    ]
    return federated + deployed


def _cell(value: tuple[float, float]) -> str:
    mean, sd = value
    return f"{mean:.3f} ± {sd:.3f}"


def _gain(mean: float, low: float, high: float) -> str:
    text = f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"
    return f"**worse** {text}" if high < 0 else text
