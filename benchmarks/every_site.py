"""Every site better off than alone? Per-site local-only, federated, adaptations and `deployed`, one table per benchmark.

    python benchmarks/every_site.py                                  # every benchmark of conf/benchmarks/every_site.yaml
    python benchmarks/every_site.py --only heart                     # one of them
    python benchmarks/every_site.py --only breastmnist_a1 --data-path /data/chestmnist.npz   # any MedMNIST-style .npz

`deployed` is what each site chose on its own validation split (federation/adaptation/);
the last column is deployed minus local-only accuracy on that site's test patients with a
paired-bootstrap 95% interval (all seeds' test patients pooled in pairs), so "worse" means
beyond noise. Beside the candidates, columns that never compete (`shown` in the yaml):
Ditto and FedRep-style head-only fine-tuning (adaptation.report_only), and FedBN (Li et
al., ICLR 2021), the same run with the FedBN strategy, whose `federated` column it is;
each only where the model makes it differ from what is already there. `methods` in the yaml
(adaptation.methods) adds candidates that are not defaults, e.g. the global/local `mixture`. Torch runs one
thread. Results: benchmarks/results/every_site.md (a benchmark not rerun keeps its
section from the previous file).
"""
from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from strategies import run_row  # noqa: E402  (benchmarks/ is on the path when this script runs)

from federation.build import build_module  # noqa: E402
from federation.state import normalisation_keys, trainable_keys  # noqa: E402
from modalities.consortium import load_consortium  # noqa: E402

HIDDEN = ("personalised", "knowledge")
SHOWN_ONLY = ("finetuned_head", "ditto", "fedbn")  # reported, never a candidate for `deployed`
FEDBN = ["federation.strategy._target_=federation.strategies.fedbn.FedBN", "adaptation.enabled=false", "baselines.local=false", "baselines.pooled=false"]
RESULTS = ROOT / "benchmarks" / "results" / "every_site.md"


def overrides(bench, extra: list[str]) -> list[str]:
    experiment = [f"experiment={bench.experiment}"] if bench.get("experiment") else []
    return [*experiment, "progress=false", "torch_threads=1", *bench.get("overrides", []), *extra]


def run(bench, extra: list[str]) -> tuple[dict, float]:
    """The benchmark's experiment with its overrides, one torch thread (benchmarks/strategies.py's runner)."""
    suite = OmegaConf.create({"experiment": bench.get("experiment"), "overrides": ["torch_threads=1", *bench.get("overrides", [])]})
    return run_row(suite, {"overrides": extra}, threads=1)


def model_facts(bench, extra: list[str]) -> dict[str, bool]:
    """Whether the benchmark's model has normalisation layers that travel (else FedBN is FedAvg) and trainable
    weights under its head (else head-only fine-tuning is whole-model fine-tuning)."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides(bench, extra))
    consortium = load_consortium(cfg.data, seed=cfg.seed)
    model = build_module(cfg, consortium.modalities, consortium.label_space.labels, cfg.seed).model
    head = {id(p) for p in model.head.parameters()}
    return {"normalisation": bool(normalisation_keys(model) & set(trainable_keys(model))),
            "body": any(p.requires_grad and id(p) not in head for p in model.parameters())}


def plan(shown, facts: dict[str, bool]) -> tuple[list[str], bool, list[str]]:
    """(adaptation.report_only, whether to run FedBN, why anything asked for is left out)."""
    report_only, skipped = [], []
    for method in shown.get("report_only", []):
        if method == "finetune_head" and not facts["body"]:
            skipped.append("finetuned_head (FedRep): the model is its head alone (no trainable weights under it), so it equals finetuned")
        else:
            report_only.append(method)
    fedbn = bool(shown.get("fedbn")) and facts["normalisation"]
    if shown.get("fedbn") and not fedbn:
        skipped.append("fedbn: the model has no normalisation layers, so FedBN is FedAvg (the federated column)")
    return report_only, fedbn, skipped


def with_fedbn(summary: dict, fedbn: dict) -> dict:
    """`summary` with the FedBN run's `federated` figures as a `fedbn` approach (sites, blocks and sd over seeds)."""
    out = {**summary, "sites": {s: {**e, "fedbn": fedbn["sites"][s]["federated"]} for s, e in summary["sites"].items()}}
    for block in ("overall", "mean_over_sites"):
        out[block] = {**summary[block], "fedbn": fedbn[block]["federated"]}
    if "sd" in summary:
        sd = fedbn["sd"]
        out["sd"] = {**summary["sd"], **{b: {**summary["sd"][b], "fedbn": sd[b]["federated"]} for b in ("overall", "mean_over_sites")}}
        out["sd"]["sites"] = {s: {**v, "fedbn": sd["sites"][s]["federated"]} for s, v in summary["sd"]["sites"].items()}
    return out


def columns(summary: dict) -> list[str]:
    """The summary's approaches in its own order, FedBN beside federated."""
    approaches = [a for a in summary["overall"] if a not in HIDDEN and a != "fedbn"]
    if "fedbn" in summary["overall"]:
        approaches.insert(approaches.index("federated") + 1, "fedbn")
    return approaches


def section(name: str, bench, summary: dict, seconds: float, command: str, skipped: list[str] = ()) -> str:
    approaches = columns(summary)
    comparison = summary.get("deployed_vs_local", {})
    header = ["site", "n_train", "n_test", *approaches, "deployed − local-only [95%]", "deployed (count over seeds)"]
    lines = [f"### {name}", "", f"`{command}` ({seconds:.0f} s). {bench.get('note', '').strip()}", "", *_about(summary, approaches, skipped),
             "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    choices = _choices(summary)
    for site, entry in summary["sites"].items():
        cells = [_value(summary, ("sites", site), a) for a in approaches]
        lines.append("| " + " | ".join([site, str(entry["n_train"]), str(entry["n_test"]), *cells, _difference(comparison.get(site)), choices.get(site, "")]) + " |")
    for block, label in (("mean_over_sites", "**mean over sites**"), ("overall", "**all test patients**")):
        cells = [_value(summary, (block,), a) for a in approaches]
        last = _difference(comparison.get("all test patients")) if block == "overall" else ""
        lines.append("| " + " | ".join([label, "", "", *cells, last, ""]) + " |")
    return "\n".join([*lines, *_auroc(summary, approaches)]) + "\n"


def _about(summary: dict, approaches: list[str], skipped: list[str]) -> list[str]:
    """What the choice was made on, which columns never compete, and what was left out and why."""
    criteria = {choice.get("criterion") for record in _records(summary) for choice in record.values()} - {None}
    text = [f"Chosen on validation {', '.join(sorted(criteria)).replace('_', ' ')}." if criteria else ""]
    shown = [a for a in approaches if a in SHOWN_ONLY]
    text += [f"Shown only, never deployed: {', '.join(shown)}." if shown else ""]
    text += [f"Not run: {'; '.join(skipped)}." if skipped else ""]
    return [" ".join(t for t in text if t), ""] if any(text) else []


def _auroc(summary: dict, approaches: list[str]) -> list[str]:
    """Mean-over-sites AUROC where the experiment reports it (accuracy alone hides ranking quality)."""
    if "auroc" not in summary.get("metric_names", []):
        return []
    values = ", ".join(f"{a} {summary['mean_over_sites'][a]['auroc']:.3f}" for a in approaches)
    return ["", f"Mean-over-sites AUROC: {values}."]


def _records(summary: dict) -> list[dict]:
    records = summary.get("deployment") or {}
    return list(records.values()) if all(str(k).startswith("seed ") for k in records) else [records]


def _value(summary: dict, path: tuple, approach: str) -> str:
    node, sd = summary, summary.get("sd", {})
    for key in path:
        node, sd = node[key], sd.get(key, {})
    value, spread = node[approach]["accuracy"], sd.get(approach, {}).get("accuracy")
    if math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if spread is None or math.isnan(spread) else f"{value:.3f} ± {spread:.3f}"


def _difference(d: dict | None) -> str:
    if not d:
        return "n/a"
    flag = " **worse**" if d["verdict"] == "worse" else (" better" if d["verdict"] == "better" else "")
    return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{flag}"


def _choices(summary: dict) -> dict[str, str]:
    counts: dict[str, Counter] = {}
    for record in _records(summary):
        for site, choice in record.items():
            counts.setdefault(site, Counter())[choice["deployed"]] += 1
    return {site: ", ".join(f"{name} {n}" for name, n in c.most_common()) for site, c in counts.items()}


def _previous_sections() -> dict[str, str]:
    if not RESULTS.exists():
        return {}
    parts = re.split(r"^### ", RESULTS.read_text(), flags=re.M)[1:]
    return {p.splitlines()[0].strip(): "### " + p.rstrip() + "\n" for p in parts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="benchmarks to run (names in conf/benchmarks/every_site.yaml)")
    parser.add_argument("--data-path", help="data.path for the imaging benchmarks: any MedMNIST-style .npz")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spec = OmegaConf.load(ROOT / "conf" / "benchmarks" / "every_site.yaml")
    unknown = set(args.only or ()) - set(spec.benchmarks)
    if unknown:
        parser.error(f"no such benchmarks in conf/benchmarks/every_site.yaml: {sorted(unknown)}")
    if args.data_path and not Path(args.data_path).is_file():
        parser.error(f"--data-path {args.data_path}: no such file")
    sections = _previous_sections()
    for name, bench in spec.benchmarks.items():
        if args.only and name not in args.only:
            continue
        extra = [f"data.path={args.data_path}"] if args.data_path and bench.get("experiment") == "breastmnist" else []
        report_only, fedbn, skipped = plan(spec.get("shown", {}), model_facts(bench, extra))
        methods = [f"adaptation.methods=[{','.join(spec.methods)}]"] if spec.get("methods") else []
        summary, seconds = run(bench, [*extra, *methods, f"adaptation.report_only=[{','.join(report_only)}]"])
        if fedbn:
            fedbn_summary, fedbn_seconds = run(bench, [*extra, *FEDBN])
            summary, seconds = with_fedbn(summary, fedbn_summary), seconds + fedbn_seconds
        command = "python benchmarks/every_site.py --only " + name + (f" --data-path {args.data_path}" if extra else "")
        sections[name] = section(name, bench, summary, seconds, command, skipped)
        print(sections[name], flush=True)
    preamble = f"{spec.preamble.strip()}\n\n" if spec.get("preamble") else ""
    text = f"## {spec.title}\n\n{preamble}" + "\n".join(sections[n] for n in spec.benchmarks if n in sections)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
