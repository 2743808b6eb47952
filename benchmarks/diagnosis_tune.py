"""Choose conf/diagnosis.yaml's constants on validation publications: a coordinate search, one table.

    python benchmarks/diagnosis_tune.py                       # both settings of conf/benchmarks/diagnosis_tuning.yaml
    python benchmarks/diagnosis_tune.py --settings variants   # one setting
    python benchmarks/diagnosis_tune.py --root /data/store    # another phenopacket store

Only the federated approach runs, always with data.evaluate_on=val, so no test patient
is ever scored. Each trial changes one constant from the best values so far; the table of
every trial goes to benchmarks/results/diagnosis_tuning.md. Copy the chosen values into
conf/diagnosis.yaml (its comments say they were chosen this way).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def objective(result, metrics) -> float:
    hits = result.hits["federated"]
    return float(sum(np.concatenate([h[m] for h in hits.values()]).mean() for m in metrics))


def search(name: str, setting, spec, root: str) -> list[str]:
    import torch
    from hydra import compose, initialize_config_dir

    from federation.tasks.diagnosis.experiment import check_settings, load_cohort, public_knowledge, run_seed, settings_from

    torch.set_num_threads(1)
    overrides = [f"data={setting.data}", f"data.root={root}", "data.evaluate_on=val"]
    chosen: dict[str, object] = {}

    def config(extra: dict):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
            cfg = compose("diagnosis", overrides=overrides + [f"{k}={v}" for k, v in {**chosen, **extra}.items()])
        check_settings(cfg)
        return cfg

    base = config({})
    cohorts = {s: load_cohort(base, s) for s in spec.seeds}
    publics: dict = {}

    def score(extra: dict) -> float:
        cfg = config(extra)
        likelihood, genotype, _, _ = settings_from(cfg)
        values = []
        for s in spec.seeds:
            key = (s, likelihood)
            if key not in publics:
                publics[key] = public_knowledge(cfg, cohorts[s])
            public = copy.copy(publics[key])
            public.genotype = genotype
            values.append(objective(run_seed(cfg, s, ("federated",), cohorts[s], public), spec.objective))
        return float(np.mean(values))

    rows = [f"### {name} (data={setting.data}, seeds {list(spec.seeds)})", "", "| trial | objective | seconds |", "| --- | --- | --- |"]

    def note(row: str) -> None:
        rows.append(row)
        print(row, flush=True)  # as it goes: a long search shows its progress

    start = time.perf_counter()
    best = score({})
    note(f"| current config | {best:.3f} | {time.perf_counter() - start:.0f} |")
    tried = {frozenset()}
    for _ in range(int(spec.passes)):
        for key, values in setting.grid.items():
            for value in values:
                trial = {k: v for k, v in {**chosen, key: value}.items() if v != base_value(base, k)}  # the config's own values drop out
                if frozenset(trial.items()) in tried:
                    continue
                tried.add(frozenset(trial.items()))
                start = time.perf_counter()
                value_score = score({key: value})
                note(f"| {key}={value} | {value_score:.3f} | {time.perf_counter() - start:.0f} |")
                if value_score > best + 1e-9:
                    best, chosen[key] = value_score, value
    note("")
    note(f"Chosen: {chosen or 'the current config'} (objective {best:.3f}).")
    note("")
    return rows


def base_value(cfg, key: str):
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key)


def main() -> None:
    from omegaconf import OmegaConf

    spec = OmegaConf.load(ROOT / "conf" / "benchmarks" / "diagnosis_tuning.yaml")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "phenopackets"))
    parser.add_argument("--settings", nargs="+", choices=sorted(spec.settings), default=list(spec.settings))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "diagnosis_tuning.md"))
    parser.add_argument("--only", nargs="+", help="search only these grid keys, e.g. training.rounds")
    args = parser.parse_args()
    if not Path(args.root).is_dir():
        sys.exit(f"error: {args.root}: --root is not a folder of phenopackets")
    from federation.outputs import write_text

    lines = [
        "# Diagnosis constants chosen on validation publications",
        "",
        f"`python benchmarks/diagnosis_tune.py --root {args.root}` (conf/benchmarks/diagnosis_tuning.yaml; objective: federated {' + '.join(spec.objective)} on validation patients, mean over seeds).",
        "",
    ]
    for name in args.settings:
        setting = spec.settings[name]
        if args.only:
            setting.grid = {k: v for k, v in setting.grid.items() if k in args.only}
        lines += search(name, setting, spec, args.root)
    write_text(Path(args.out), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
