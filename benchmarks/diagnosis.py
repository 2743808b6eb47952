"""Open differential diagnosis, phenotype only and with variants, 3 seeds: one markdown file.

    python benchmarks/diagnosis.py                                   # ../shared/data/phenopackets
    python benchmarks/diagnosis.py --root /data/phenopacket-store    # any folder of phenopackets
    python benchmarks/diagnosis.py --evaluate-on val                 # validation publications (tuning)
    python benchmarks/diagnosis.py --settings phenotype --seeds 0    # one setting, one seed

Each setting runs `conf/diagnosis.yaml` (phenotype only: data=phenopackets; with
variants: data=phenopackets_variants) with the given seeds, in its own process with
one torch thread, and the tables go to benchmarks/results/diagnosis.md and stdout.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {"phenotype": "data=phenopackets", "variants": "data=phenopackets_variants"}
TITLES = {"phenotype": "Phenotype only", "variants": "With variants among background candidates"}


def run_setting(setting: str, root: str, seeds: list[int], evaluate_on: str, extra: list[str]) -> tuple[str, dict, float]:
    import torch
    from hydra import compose, initialize_config_dir

    from federation.tasks.diagnosis.experiment import check_settings, run_seed
    from federation.tasks.diagnosis.report import build_summary

    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("diagnosis", overrides=[SETTINGS[setting], f"data.root={root}", f"data.evaluate_on={evaluate_on}", *extra])
    check_settings(cfg)
    start = time.perf_counter()
    summary = build_summary([run_seed(cfg, s) for s in seeds], seeds, int(cfg.bootstrap.resamples))
    return setting, summary, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "phenopackets"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["phenotype", "variants"])
    parser.add_argument("--evaluate-on", choices=["test", "val"], default="test")
    parser.add_argument("--out", default=None, help="markdown file (default benchmarks/results/diagnosis[_val].md)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for conf/diagnosis.yaml, e.g. profiles.min_count=3")
    args = parser.parse_args()
    if not Path(args.root).is_dir():
        sys.exit(f"error: {args.root}: --root is not a folder of phenopackets")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"diagnosis{'_val' if args.evaluate_on == 'val' else ''}.md"

    from federation.outputs import write_text
    from federation.tasks.diagnosis.report import markdown, worse_sites

    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_setting, s, args.root, args.seeds, args.evaluate_on, args.overrides) for s in args.settings]
        results = [f.result() for f in futures]
    parts = [
        f"# Open differential diagnosis ({args.evaluate_on} patients)\n",
        f"`python benchmarks/diagnosis.py --root {args.root} --seeds {' '.join(map(str, args.seeds))} --evaluate-on {args.evaluate_on}"
        + (" " + " ".join(args.overrides) if args.overrides else "") + "` (one torch thread per setting).\n",
    ]
    for setting, summary, seconds in results:
        worse = worse_sites(summary)
        parts.append(markdown(summary, f"{TITLES[setting]} ({seconds / len(args.seeds):.0f} s per seed)"))
        parts.append(f"Federated worse than another approach beyond noise: {', '.join(worse) if worse else 'nowhere'}.\n")
        facts = summary["facts"]
        parts.append(
            f"Last seed: {facts['labels']} label diseases, {len(facts['labels_without_annotations'])} without annotations "
            f"({facts['test_patients_without_annotations']} of {facts['test_patients']} test patients), "
            f"{facts['unannotated_labels_with_shared_profile']} of them profiled by shared cases; {facts['open_candidates']} open candidates; "
            f"{facts['cases_suppressed_by_k']} cases suppressed by k; learned weights {facts['federated_weights']}; "
            f"counted fallbacks {summary['fallbacks'] or 'none'}.\n"
        )
    text = "\n".join(parts)
    write_text(out, text)
    print(text)


if __name__ == "__main__":
    main()
