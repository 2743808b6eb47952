"""Every site better off than alone? Per-site local-only, federated, adaptations and `deployed`, one table per benchmark.

    python benchmarks/every_site.py                                  # every benchmark of conf/benchmarks/every_site.yaml
    python benchmarks/every_site.py --only heart                     # one of them
    python benchmarks/every_site.py --only breastmnist_a1 --data-path /data/chestmnist.npz   # any MedMNIST-style .npz

`deployed` is what each site chose on its own validation split (federation/adaptation/);
the last column is deployed minus local-only accuracy on that site's test patients with a
paired-bootstrap 95% interval (all seeds' test patients pooled in pairs), so "worse" means
beyond noise. Torch runs one thread. Results: benchmarks/results/every_site.md (a benchmark
not rerun keeps its section from the previous file).
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

from strategies import run_row  # noqa: E402  (benchmarks/ is on the path when this script runs)

from federation.report import APPROACHES  # noqa: E402

COLUMNS = [a for a in APPROACHES if a not in ("personalised", "knowledge")]
RESULTS = ROOT / "benchmarks" / "results" / "every_site.md"


def run(bench, extra: list[str]) -> tuple[dict, float]:
    """The benchmark's experiment with its overrides, one torch thread (benchmarks/strategies.py's runner)."""
    suite = OmegaConf.create({"experiment": bench.get("experiment"), "overrides": ["torch_threads=1", *bench.get("overrides", [])]})
    return run_row(suite, {"overrides": extra}, threads=1)


def section(name: str, bench, summary: dict, seconds: float, command: str) -> str:
    approaches = [a for a in COLUMNS if a in summary["overall"]]
    comparison = summary.get("deployed_vs_local", {})
    header = ["site", "n_train", "n_test", *approaches, "deployed − local-only [95%]", "deployed (count over seeds)"]
    lines = [f"### {name}", "", f"`{command}` ({seconds:.0f} s). {bench.get('note', '').strip()}", "",
             "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    choices = _choices(summary)
    for site, entry in summary["sites"].items():
        cells = [_value(summary, ("sites", site), a) for a in approaches]
        lines.append("| " + " | ".join([site, str(entry["n_train"]), str(entry["n_test"]), *cells, _difference(comparison.get(site)), choices.get(site, "")]) + " |")
    for block, label in (("mean_over_sites", "**mean over sites**"), ("overall", "**all test patients**")):
        cells = [_value(summary, (block,), a) for a in approaches]
        last = _difference(comparison.get("all test patients")) if block == "overall" else ""
        lines.append("| " + " | ".join([label, "", "", *cells, last, ""]) + " |")
    return "\n".join(lines) + "\n"


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
    records = summary.get("deployment") or {}
    per_seed = list(records.values()) if all(str(k).startswith("seed ") for k in records) else [records]
    counts: dict[str, Counter] = {}
    for record in per_seed:
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
        summary, seconds = run(bench, extra)
        command = "python benchmarks/every_site.py --only " + name + (f" --data-path {args.data_path}" if extra else "")
        sections[name] = section(name, bench, summary, seconds, command)
        print(sections[name], flush=True)
    text = f"## {spec.title}\n\n" + "\n".join(sections[n] for n in spec.benchmarks if n in sections)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
