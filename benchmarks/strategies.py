"""Federation strategies side by side on one experiment: one command, one markdown table.

    python benchmarks/strategies.py heart          # Fed-Heart-Disease, FLamby's protocol, 5 seeds
    python benchmarks/strategies.py synthetic      # the embedded consortium, per-site top-1
    python benchmarks/strategies.py phenopackets   # published patients, per-site top-1
    python benchmarks/strategies.py byzantine      # 1 sign-flipping (x10) and 1 NaN site of 5
    python benchmarks/strategies.py heart --jobs 16   # rows in parallel processes on a many-core machine
    python benchmarks/strategies.py byzantine --only "median, no attacker"   # re-measure rows, keep the others

Each suite is conf/benchmarks/<suite>.yaml: the experiment, the overrides every run
shares, and one entry per row (its overrides, which model it reads, a published
reference). The table goes to benchmarks/results/<suite>.md and to stdout.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

import modalities.image_sites  # noqa: E402,F401  registers config resolvers
from federation.driver.experiment import run_experiment  # noqa: E402


def run_row(suite, row: dict, threads: int | None = None) -> tuple[dict, float]:
    """One entry's summary (and its wall time): the suite's experiment with the row's overrides."""
    if threads:
        import torch

        torch.set_num_threads(threads)  # parallel rows share the cores instead of oversubscribing them
    experiment = [f"experiment={suite.experiment}"] if suite.get("experiment") else []
    overrides = [*experiment, "progress=false", *suite.get("overrides", []), *row.get("overrides", [])]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        summary = run_experiment(cfg, Path(out))
    return summary, time.perf_counter() - started


def cell(summary: dict, block: str, approach: str, metric: str, site: str | None = None) -> str:
    """A value with its sd over seeds where the run had several."""
    if site is None:
        value = summary[block][approach][metric]
        sd = summary.get("sd", {}).get(block, {}).get(approach, {}).get(metric)
    else:
        value = summary["sites"][site][approach][metric]
        sd = summary.get("sd", {}).get("sites", {}).get(site, {}).get(approach, {}).get(metric)
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if sd is None or math.isnan(sd) else f"{value:.3f} ± {sd:.3f}"


def table(suite, results: list[tuple[str, dict, dict, float]]) -> str:
    metric, block = suite.metric, suite.get("block", "mean_over_sites")
    sites = list(results[0][1]["sites"]) if suite.get("per_site") else []
    header = ["run", *sites, f"{metric} ({block.replace('_', ' ')})", suite.get("reference_label", "reference"), "wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    floor = _local_floor(suite, results)
    for label, summary, row, seconds in results:
        approach = row.get("approach", "federated")
        per_site = [cell(summary, block, approach, metric, s) + _below(summary, approach, metric, s, floor) for s in sites]
        reference = row.get("reference")
        lines.append("| " + " | ".join([label, *per_site, cell(summary, block, approach, metric), "" if reference is None else f"{reference:.3f}", f"{seconds:.0f}"]) + " |")
    return "\n".join(lines) + "\n"


def _local_floor(suite, results) -> dict | None:
    """Per site, the local-only value of the row marked `local_floor` (cells below it are flagged)."""
    for _, summary, row, _ in results:
        if row.get("local_floor"):
            return {s: summary["sites"][s]["local"][suite.metric] for s in summary["sites"]}
    return None


def _below(summary, approach, metric, site, floor) -> str:
    if floor is None or approach == "local":
        return ""
    return " ▼" if summary["sites"][site][approach][metric] < floor[site] - 1e-9 else ""


def merge_rows(previous: str, table_text: str, labels: list[str]) -> str:
    """`table_text`'s rows, with the rows of `previous` (an earlier table of the suite) it lacks, in `labels` order.

    A row is known by its first cell; a label in neither table is left out.
    """
    old, new = _rows_by_label(previous), _rows_by_label(table_text)
    header = table_text.splitlines()[:2]
    return "\n".join(header + [new.get(label) or old[label] for label in labels if label in new or label in old]) + "\n"


def _rows_by_label(text: str) -> dict[str, str]:
    """The body rows of the (one) markdown table in `text`, header and separator dropped, by first cell."""
    lines = [line for line in text.splitlines() if line.startswith("| ")][2:]
    return {line[2:].split(" | ")[0]: line for line in lines}


def _run_rows(suite, rows: dict, jobs: int):
    """Each row's (summary, seconds), in order; in `jobs` spawned processes when jobs > 1."""
    if jobs <= 1:
        yield from (run_row(suite, row) for row in rows.values())
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_row, suite, row, 1) for row in rows.values()]
        yield from (f.result() for f in futures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", help="a file stem in conf/benchmarks/")
    parser.add_argument("--only", nargs="*", help="run only these rows (labels); the results file keeps its other rows")
    parser.add_argument("--jobs", type=int, default=1, help="rows run in parallel processes, one torch thread each")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    suite = OmegaConf.load(ROOT / "conf" / "benchmarks" / f"{args.suite}.yaml")
    rows = {label: row for label, row in suite.runs.items() if not args.only or label in args.only}
    if args.only and (unknown := set(args.only) - set(suite.runs)):
        parser.error(f"no such rows in conf/benchmarks/{args.suite}.yaml: {sorted(unknown)}")
    floor = [label for label, row in suite.runs.items() if row.get("local_floor")]
    if args.only and floor and floor[0] not in rows:
        parser.error(f"rows are marked against {floor[0]!r}: run it too (--only ... {floor[0]!r})")
    results = []
    for label, (summary, seconds) in zip(rows, _run_rows(suite, rows, args.jobs)):
        results.append((label, summary, rows[label], seconds))
        print(f"{label}: {cell(summary, suite.get('block', 'mean_over_sites'), rows[label].get('approach', 'federated'), suite.metric)} ({seconds:.0f} s)", flush=True)
    out = ROOT / "benchmarks" / "results" / f"{args.suite}.md"
    body = table(suite, results)
    if args.only and out.exists():
        body = merge_rows(out.read_text(), body, list(suite.runs))
    text = f"## {suite.title}\n\n{suite.get('note', '').strip()}\n\n{body}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
