"""Privacy against utility: per epsilon and DP method, utility, epsilon spent, membership attack, trainable parameters, wall time.

    python benchmarks/privacy_utility.py                     # every experiment of conf/benchmarks/privacy_utility.yaml
    python benchmarks/privacy_utility.py --only demo         # the default multimodal run
    python benchmarks/privacy_utility.py --only heart --data-root ../shared/data/heart
    python benchmarks/privacy_utility.py --only demo --seeds 0 1 2 --workers 2
    python benchmarks/privacy_utility.py --only demo --methods dp_sgd --epsilons 8 3 --seeds 1 2 --reuse   # add cells

Each cell trains the federation under one privacy setting (Hydra overrides on the
experiment: `privacy=dp_sgd privacy.epsilon=8 ...`) and attacks its final model with
Yeom et al.'s loss-threshold attack (federation/privacy/membership.py): AUC and TPR
at 1% FPR, members = the sites' training patients, non-members = their test
patients. Epsilon spent is the largest over the sites, from their Opacus RDP
accountants; at epsilon inf a DP method clips (and freezes) but adds no noise, which
separates the cost of clipping from that of noise. The non-DP reference (privacy=none)
is trained in the same run and printed beside every row. Validation top-1 is shown
too: it is what the tuned defaults were chosen on (never test).
Results: benchmarks/results/privacy_utility.md (an experiment not rerun keeps its section).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "privacy_utility.md"
REFERENCE = "none"


def bench_config():
    return OmegaConf.load(ROOT / "conf" / "benchmarks" / "privacy_utility.yaml")


def cells(experiment, epsilons: list[float], seeds: list[int], methods: list[str] | None) -> list[tuple]:
    """(method, epsilon, seed, overrides) for every cell; the reference once per seed, at epsilon inf."""
    out = [(REFERENCE, math.inf, seed, list(experiment.methods[REFERENCE])) for seed in seeds]
    for method, overrides in experiment.methods.items():
        if method == REFERENCE or (methods and method not in methods):
            continue
        for epsilon in experiment.get("epsilons_by_method", {}).get(method, epsilons):
            out += [(method, float(epsilon), seed, [*overrides, f"privacy.epsilon={_eps(float(epsilon))}"]) for seed in seeds]
    return out


def run_cell(base: list[str], method: str, epsilon: float, seed: int, overrides: list[str]) -> dict:
    """One federation under one privacy setting, attacked; runs in a worker process (torch on one thread)."""
    import torch

    from federation.build import build_module
    from federation.privacy.membership import attack_federation
    from federation.privacy.public_parts import private_parameter_count
    from federation.training_env import quiet_lightning
    from modalities.consortium import load_consortium

    torch.set_num_threads(1)
    quiet_lightning()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*base, *overrides])
    privacy = OmegaConf.to_container(cfg.privacy, resolve=True)
    consortium = load_consortium(cfg.data, seed=cfg.seed)
    model = build_module(cfg, consortium.modalities, consortium.label_space.labels, seed).model
    frozen = privacy.get("freeze") if privacy.get("kind") == "dp_sgd" else ()
    started = time.perf_counter()
    result = attack_federation(cfg, privacy, consortium, seed)
    return result | {"method": method, "target_epsilon": epsilon, "seed": seed, "wall_s": time.perf_counter() - started,
                     "trainable": private_parameter_count(model, frozen or ()), "overrides": overrides}


def measure(name: str, experiment, args, saved: list[dict], record: Path) -> list[dict]:
    """Run every cell not in `saved` (the runs of an earlier invocation, kept with --reuse); returns saved + new.

    `record` is rewritten after every cell, so a run stopped part-way keeps what it measured (--reuse goes on from it)."""
    base = [*experiment.overrides, "progress=false", "torch_threads=1", "tracking=off"] + ([f"data.root={args.data_root}"] if args.data_root else [])
    done = {_key(r["method"], r["target_epsilon"], r["seed"], r.get("overrides")) for r in saved}
    todo = [c for c in cells(experiment, args.epsilons or list(experiment.epsilons), args.seeds or list(experiment.seeds), args.methods)
            if _key(c[0], c[1], c[2], c[3]) not in done]
    runs = list(saved)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_cell, base, *cell) for cell in todo]
        for cell, future in zip(todo, futures):
            runs.append(future.result())
            record.write_text(json.dumps(runs, indent=1, default=str))
            print(f"[{name}] {cell[0]} eps={cell[1]:g} seed={cell[2]}: " + json.dumps({k: runs[-1][k] for k in ("test_accuracy", "val_accuracy", "epsilon", "auc", "wall_s")}), flush=True)
    return runs


def table(name: str, experiment, runs: list[dict]) -> str:
    """One row per method and epsilon; the non-DP reference beside each row is its mean over the row's own seeds."""
    utility = experiment.utility
    reference = {r["seed"]: r[utility] for r in runs if r["method"] == REFERENCE}
    rows = [f"## {experiment.title}", "", str(experiment.note).strip(), "",
            f"    {experiment.command}", "",
            f"| method | target epsilon | epsilon spent (max over sites) | {experiment.utility_label} | non-DP reference, same seeds | validation top-1 "
            "| attack AUC | TPR at 1% FPR | trainable parameters | seeds | wall s per run |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["method"], r["target_epsilon"]), []).append(r)
    for (method, epsilon), group in groups.items():
        seeds = sorted(r["seed"] for r in group)
        ref = _cell([reference[s] for s in seeds if s in reference])
        rows.append(f"| {method} | {_eps(epsilon)} | {_cell([r['epsilon'] for r in group])} | {_cell([r[utility] for r in group])} | {ref} | "
                    f"{_cell([r['val_accuracy'] for r in group])} | {_cell([r['auc'] for r in group])} | {_cell([r['tpr_at_1pct_fpr'] for r in group])} | "
                    f"{group[0]['trainable']:,} | {','.join(map(str, seeds))} | {statistics.median(r['wall_s'] for r in group):.0f} |")
    rows += ["", "Mean ± sd over the seeds in the row (one value: one seed). Wall time: median per run, several runs at once "
             "in worker processes on a shared 2-core machine, so it compares rows only roughly."]
    return "\n".join(rows) + "\n"


def noise_table(name: str, experiment, args) -> str:
    """Per site: patients, and the noise multiplier the accountant calibrates for each epsilon and number of rounds
    (no training): how much noise a small site must add, and how much fewer rounds would save."""
    from federation.privacy.dp_sgd import calibrate_noise, logical_batch, planned_steps
    from federation.training_env import local_limits
    from modalities.consortium import load_consortium

    base = [*experiment.overrides, "privacy=dp_sgd", "tracking=off"] + ([f"data.root={args.data_root}"] if args.data_root else [])
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=base)
    privacy = OmegaConf.to_container(cfg.privacy, resolve=True)
    consortium = load_consortium(cfg.data, seed=cfg.seed)
    epsilons = [e for e in experiment.epsilons if not math.isinf(e)]
    rounds = list(experiment.noise_rounds)
    header = " | ".join(f"sigma at eps {e:g}, {r} rounds" for e in epsilons for r in rounds)
    rows = [f"### {name}: noise multiplier per site (Opacus RDP accountant, delta {privacy['delta']:g}, batch {cfg.data.batch_size}, "
            f"{cfg.federation.local_epochs} local epochs a round)", "", f"| site | training patients | sampling rate | {header} |",
            "| --- | --- | --- | " + " | ".join("---" for _ in epsilons for _ in rounds) + " |"]
    for data in consortium.sites:
        n = len(data.splits["train"])
        batch = logical_batch(privacy, n, cfg.data.batch_size)
        steps = planned_steps(local_limits(cfg.federation), n, batch)
        cells = [f"{calibrate_noise(e, privacy['delta'], batch / n, steps * r):.2f}" for e in epsilons for r in rounds]
        rows.append(f"| {data.name} | {n} | {batch / n:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def write_section(name: str, text: str, path: Path = RESULTS) -> None:
    """Replace this experiment's section (between its markers), keeping the others."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    old = path.read_text() if path.exists() else "# Privacy against utility (benchmarks/privacy_utility.py)\n\n"
    block = f"{start}\n{text}{end}\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end) + "\n?", re.S)
    path.write_text(pattern.sub(lambda _: block, old) if start in old else old.rstrip("\n") + "\n\n" + block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="experiments of conf/benchmarks/privacy_utility.yaml")
    parser.add_argument("--methods", nargs="+", help="methods to run beside the reference (default: all)")
    parser.add_argument("--epsilons", type=float, nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--noise-only", action="store_true", help="only the accountant's noise table (no training)")
    parser.add_argument("--table-only", action="store_true", help="rewrite the tables from the JSON records, training nothing")
    parser.add_argument("--reuse", action="store_true", help="keep the cells of the experiment's last JSON record; run only the missing ones")
    args = parser.parse_args()
    config = bench_config()
    for name in args.only or list(config.experiments):
        experiment = config.experiments[name]
        if experiment.get("noise_rounds"):
            write_section(f"{name}_noise", noise_table(name, experiment, args), args.out)
        if args.noise_only:
            continue
        record = args.out.parent / f"privacy_utility_{name}.json"
        saved = json.loads(record.read_text()) if (args.reuse or args.table_only) and record.exists() else []
        runs = saved if args.table_only else measure(name, experiment, args, saved, record)
        record.write_text(json.dumps(runs, indent=1, default=str))
        text = table(name, experiment, runs)
        write_section(name, text, args.out)
        print(text)


def _key(method: str, epsilon, seed: int, overrides=None) -> tuple:
    """A cell's identity for --reuse: method, epsilon, seed (a method's name stands for its overrides in the yaml)."""
    return (method, float(epsilon), int(seed))


def _eps(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:g}"


def _cell(values: list[float]) -> str:
    if not values or any(math.isnan(v) for v in values):
        return "n/a"  # e.g. no validation split (FLamby's heart protocol)
    if any(math.isinf(v) for v in values):
        return "inf"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


if __name__ == "__main__":
    main()
