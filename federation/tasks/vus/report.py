"""The variant experiment's markdown tables and reliability plot, from the "vus" block of summary.json.

One table answers "is the federated model better than the scores a geneticist
already has, on genes nobody trained on?", one per lab answers "does every lab
gain from federating?", and one pairs each score with the model on the rows
where that score exists, so a score is never judged on rows it could not see.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

APPROACH_NAMES = {"federated": "federated", "pooled": "pooled (reference)", "local": "local-only (each lab's own model)"}


def vus_table(report: dict) -> str:
    return "\n".join([_overall(report), _per_lab(report), _paired(report), _evidence(report), _targets(report)])


def _overall(report: dict) -> str:
    held, overall, present, ece = report["held_out"], report["overall"], report["all_present"], report["calibration"]["ece"]
    cal = held["calibration"]
    lines = [
        "### Variant pathogenicity on held-out genes",
        "",
        f"{held['test_variants']} test variants in {held['test_genes']} genes that no lab trained on; calibrated ({cal['method']}) "
        f"on {cal['n']} variants in {cal['genes']} other held-out genes. Missing values: {report['missing_values']}.",
        "",
        f"| method | AUROC | AUPRC | ECE | AUROC, all features present (n={present['n']}) | AUPRC, all features present |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for approach in ("federated", "pooled", "local"):
        if approach in overall:
            row = [APPROACH_NAMES[approach], *_pair(overall[approach]), _f(ece.get(approach)), *_pair(present[approach])]
            lines.append(_row(row))
            if approach == "federated":
                lines.append(_row(["federated, calibrated", "same", "same", _f(ece.get("federated_calibrated")), "same", "same"]))
    others = report.get("not_in_silico", [])
    for name in _by_auroc(overall):
        lines.append(_row([name + (" †" if name in others else ""), *_pair(overall[name]), "", *_pair(present[name])]))
    if others:
        lines += ["", f"† {', '.join(others)}: an input of the model, not an in-silico score; shown alone for reference, not counted in the target."]
    return "\n".join(lines) + "\n"


def _per_lab(report: dict) -> str:
    approaches = [a for a in ("local", "federated", "pooled") if a in report["overall"]]
    header = ["lab", "n_train", "n_test"] + [f"AUROC {a}" for a in approaches] + ["AUROC best single score"]
    header += [f"AUPRC {a}" for a in approaches] + ["AUPRC best single score"]
    lines = ["#### Per lab (test rows: the lab's variants in held-out genes)", "", _row(header), _row(["---"] * len(header))]
    others = set(report.get("not_in_silico", []))
    for lab, block in report["sites"].items():
        singles = {k: v for k, v in block["single_scores"].items() if k not in others}
        best = max(singles, key=lambda k: -math.inf if math.isnan(singles[k]["auroc"]) else singles[k]["auroc"])
        cells = [lab, str(block["n_train"]), str(block["n_test"])]
        cells += [_f(block[a]["auroc"], block[a].get("auroc_sd")) for a in approaches] + [f"{_f(singles[best]['auroc'])} ({best})"]
        cells += [_f(block[a]["auprc"], block[a].get("auprc_sd")) for a in approaches] + [f"{_f(singles[best]['auprc'])} ({best})"]
        lines.append(_row(cells))
    return "\n".join(lines) + "\n"


def _paired(report: dict) -> str:
    others = set(report.get("not_in_silico", []))
    lines = [
        "#### Each score on the rows where it is present (no imputation)",
        "",
        "| score | rows | score AUROC | federated AUROC | federated - score | pooled AUROC |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows = {k: v for k, v in report["present_rows"].items() if k not in others}
    for name, entry in sorted(rows.items(), key=lambda kv: -_nan_low(kv[1][kv[0]]["auroc"])):
        fed = entry["federated"]["auroc"]
        pooled = entry.get("pooled", {}).get("auroc", math.nan)
        lines.append(_row([name, str(entry["n"]), _f(entry[name]["auroc"]), _f(fed), _f(fed - entry[name]["auroc"], sign=True), _f(pooled)]))
    return "\n".join(lines) + "\n"


def _evidence(report: dict) -> str:
    evidence = report["evidence"]
    prior_odds = evidence["prior"] / (1 - evidence["prior"])
    lines = [
        f"#### Evidence levels of the test variants (prior {evidence['prior']}, c = {evidence['odds_very_strong']:g}; "
        "a level is met only by the whole interval)",
        "",
        "| level | posterior threshold | variants | pathogenic | benign | likelihood ratio observed | required |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in evidence["levels"].items():
        cut = entry["threshold"]
        required = "" if cut is None else _f(cut / (1 - cut) / prior_odds, digits=3)
        lines.append(_row([name, "" if cut is None else _f(cut, digits=4), str(entry["n"]), str(entry["pathogenic"]), str(entry["benign"]),
                           _f(entry["observed_lr"], digits=3), required]))
    return "\n".join(lines) + "\n"


def _targets(report: dict) -> str:
    t = report["targets"]
    margin = t["federated_auroc"] - t["best_single_auroc"]
    behind = [lab for lab, v in t["labs"].items() if not v["federated"] > v["local"]]
    return "\n".join([
        "#### Targets",
        "",
        f"- AUROC on held-out genes {_f(t['federated_auroc'])} vs the best single score {t['best_single_score']} {_f(t['best_single_auroc'])} "
        f"on the same rows: {_f(margin, sign=True)} (target >= +{t['auroc_margin']:.2f}): **{'met' if t['margin_met'] else 'not met'}**; "
        f"smallest margin over a score on its own rows: {_f(t['smallest_paired_margin'], sign=True)}",
        f"- federated AUROC above local-only at every lab: **{'met' if t['every_lab_federated_above_local'] else 'not met'}**"
        + (f" (not at {', '.join(behind)})" if behind else ""),
        "",
    ])


def reliability_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, bins: int = 10) -> None:
    """Observed share of pathogenic variants against mean predicted probability, per bin; the diagonal is perfect."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, (y, p) in curves.items():
        if len(set(np.asarray(y).tolist())) < 2:
            continue
        observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="uniform")
        axis.plot(predicted, observed, marker="o", label=name)
    axis.set(xlabel="predicted P(pathogenic)", ylabel="observed share pathogenic", title="Held-out genes: reliability", xlim=(0, 1), ylim=(0, 1))
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=120)
    plt.close(figure)


def _by_auroc(overall: dict) -> list[str]:
    singles = [k for k in overall if k not in APPROACH_NAMES]
    return sorted(singles, key=lambda k: -_nan_low(overall[k]["auroc"]))


def _pair(metrics: dict) -> list[str]:
    return [_f(metrics["auroc"], metrics.get("auroc_sd")), _f(metrics["auprc"], metrics.get("auprc_sd"))]


def _nan_low(value: float) -> float:
    return -math.inf if value is None or math.isnan(value) else value


def _f(value: float | None, sd: float | None = None, digits: int = 3, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf"
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    return text if sd is None or math.isnan(sd) else f"{text} ± {sd:.{digits}f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
