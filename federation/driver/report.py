"""The run's summary: per-site metrics of the local-only, federated and pooled models, as JSON and a table.

Experiments name the metrics they report (`report.metrics`: reported name ->
metric of models.metrics), so heart reports `accuracy` and the phenopacket
experiment `top1`/`top5` from the same computation. Besides metrics over all
test patients pooled ("overall"), the summary holds the unweighted mean over
sites ("mean_over_sites"), which is how FLamby reports its benchmarks.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import torch

from models.metrics import METRIC_NAMES, classification_metrics

APPROACHES = ("local", "federated", "personalised", "calibrated", "finetuned", "finetuned_head", "ditto", "finetuned+calibrated", "local+calibrated", "mixture", "deployed", "pooled", "knowledge")
Predictions = dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]


def build_summary(task: str, predictions: Predictions, n_train: Mapping[str, int], metrics: Mapping[str, str] | None = None) -> dict:
    """predictions[approach][site] = (logits, labels) on that site's test split."""
    metrics = dict(metrics) if metrics else {name: name for name in METRIC_NAMES}
    pick = lambda computed: {name: computed[source] for name, source in metrics.items()}
    sites = {}
    for site in n_train:
        entry = {"n_train": int(n_train[site]), "n_test": int(next(iter(predictions.values()))[site][1].numel())}
        for approach, per_site in predictions.items():
            entry[approach] = pick(classification_metrics(*per_site[site]))
        sites[site] = entry
    overall = {}
    for approach, per_site in predictions.items():
        logits = torch.cat([per_site[s][0] for s in n_train])
        labels = torch.cat([per_site[s][1] for s in n_train])
        overall[approach] = pick(classification_metrics(logits, labels))
    mean_over_sites = {a: {m: _nanmean(sites[s][a][m] for s in sites) for m in metrics} for a in predictions}
    return {"task": task, "metric_names": list(metrics), "sites": sites, "overall": overall, "mean_over_sites": mean_over_sites}


def combine_seeds(summaries: Sequence[dict], seeds: Sequence[int]) -> dict:
    """Mean over seeds in the spine's shape, with the standard deviation over seeds beside it under "sd"."""
    first = summaries[0]
    combined = {"task": first["task"], "metric_names": first["metric_names"], "seeds": list(seeds)}
    combined["sites"] = {
        site: {k: (v if k in ("n_train", "n_test") else _mean_metrics([s["sites"][site][k] for s in summaries])) for k, v in entry.items()}
        for site, entry in first["sites"].items()
    }
    for block in ("overall", "mean_over_sites"):
        combined[block] = {a: _mean_metrics([s[block][a] for s in summaries]) for a in first[block]}
    combined["sd"] = {
        block: {a: _sd_metrics([s[block][a] for s in summaries]) for a in first[block]} for block in ("overall", "mean_over_sites")
    }
    combined["sd"]["sites"] = {
        site: {a: _sd_metrics([s["sites"][site][a] for s in summaries]) for a in first["overall"]} for site in first["sites"]
    }
    return combined


def markdown_table(summary: dict, metrics: Sequence[str] | None = None, reference: Mapping | None = None) -> str:
    """The summary as a markdown table; `reference` adds published numbers beside ours (see `reference_columns`)."""
    metrics = list(metrics or summary["metric_names"][:3])
    approaches = [a for a in APPROACHES if a in summary["overall"]]
    ref_columns = reference_columns(reference)
    label = f" ({reference['label']})" if reference and reference.get("label") else " (reference)"
    header = ["site", "n_train", "n_test"] + [f"{m} {a}" for m in metrics for a in approaches] + [f"{m} {a}{label}" for m, a in ref_columns]
    rows = [header, ["---"] * len(header)]
    for site, entry in summary["sites"].items():
        site_sd = summary.get("sd", {}).get("sites", {}).get(site, {})
        cells = [_fmt(entry[a][m], site_sd.get(a, {}).get(m)) for m in metrics for a in approaches]
        rows.append([site, str(entry["n_train"]), str(entry["n_test"])] + cells + [_ref(reference, ("sites", site, a)) for _, a in ref_columns])
    n_train = str(sum(e["n_train"] for e in summary["sites"].values()))
    n_test = str(sum(e["n_test"] for e in summary["sites"].values()))
    sd = summary.get("sd", {})
    for block, name in (("mean_over_sites", "**mean over sites**"), ("overall", "**all test patients**")):
        cells = [_fmt(summary[block][a][m], sd.get(block, {}).get(a, {}).get(m)) for m in metrics for a in approaches]
        rows.append([name, n_train, n_test] + cells + [_ref(reference, (block, a)) for _, a in ref_columns])
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows) + "\n"
    if reference and reference.get("note"):
        table += f"\n{reference.get('label') or 'reference'}: {reference['note']}\n"
    return table


def reference_columns(reference: Mapping | None) -> list[tuple[str, str]]:
    """(metric, approach) pairs that a reference gives values for, in APPROACHES order.

    A reference is `{label, metric, note, mean_over_sites: {approach: value}, overall: {...},
    sites: {site: {approach: value}}}`, e.g. a benchmark's published numbers.
    """
    if not reference:
        return []
    blocks = [reference.get("mean_over_sites") or {}, reference.get("overall") or {}, *(reference.get("sites") or {}).values()]
    given = {a for block in blocks for a, v in (block or {}).items() if v is not None}
    return [(str(reference.get("metric", "accuracy")), a) for a in APPROACHES if a in given]


def _ref(reference: Mapping, path: tuple[str, ...]) -> str:
    node = reference
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
        if node is None:
            return ""
    return _fmt(float(node))


def _mean_metrics(blocks: list[dict]) -> dict:
    return {m: _nanmean(b[m] for b in blocks) for m in blocks[0]}


def _sd_metrics(blocks: list[dict]) -> dict:
    out = {}
    for m in blocks[0]:
        values = [b[m] for b in blocks if not math.isnan(b[m])]
        out[m] = statistics.stdev(values) if len(values) > 1 else float("nan")
    return out


def _nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def _fmt(value: float, sd: float | None = None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if sd is None or math.isnan(sd) else f"{value:.3f} ± {sd:.3f}"
