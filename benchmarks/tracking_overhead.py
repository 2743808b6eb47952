"""What MLflow tracking costs the default run: `tracking=off` beside `tracking=mlflow` (the default), in wall time.

    python benchmarks/tracking_overhead.py                          # 3 repeats of 4 rounds
    python benchmarks/tracking_overhead.py --repeats 5 --rounds 8

Each run is `scripts/train.py` with the default config cut to `--rounds` rounds (the
baselines and the per-site adaptation included, as `make demo` runs them) and
`torch_threads=1`, each in a fresh process; the two settings take turns, so a change in
the machine's own load hits both alike. One untimed run first generates the data, warms
the caches and creates the local store: the tracked runs log into a store that exists,
as every run after a researcher's first does (a new SQLite store costs seconds of
MLflow's schema migrations, once). Both settings run with mlflow installed. The table
goes to benchmarks/results/tracking_overhead.md, with the machine it was measured on; beside
wall time, which a busy machine makes noisy, the CPU time of each run's process and the
tracker's own time as each tracked run logs it (`tracking/seconds`).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from perf_machine import describe, load_average  # noqa: E402

SETTINGS = ("off", "mlflow")


def run_once(tracking: str, rounds: int, outputs: Path, name: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; `outputs` holds the shared local store and the run folders."""
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), f"tracking={tracking}", f"federation.rounds={rounds}", "torch_threads=1",
               "progress=false", f"paths.output_dir={outputs}", f"hydra.run.dir={outputs / 'runs' / name}"]
    env = {k: v for k, v in os.environ.items() if k != "RAREFED_TRACKING"}  # the config group alone decides
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def tracker_seconds(outputs: Path, repeats: int) -> list[float]:
    """What each timed tracked run says tracking cost it (`tracking/seconds`: the tracker's own calls), from the store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = []
    for repeat in range(repeats):
        run_dir = (outputs / "runs" / f"mlflow-{repeat}").resolve()
        run = client.search_runs(experiments, filter_string=f"tags.`rarefed.run_dir` = '{run_dir}'")[0]
        found.append(run.data.metrics["tracking/seconds"])
    return found


def table(times: dict[str, list[tuple[float, float]]], own: list[float], args: argparse.Namespace, machine: str) -> str:
    wall = {s: statistics.median(t[0] for t in times[s]) for s in SETTINGS}
    cpu = {s: statistics.median(t[1] for t in times[s]) for s in SETTINGS}
    rows = ["| tracking | median wall time (s) | median CPU time (s) | each run, wall / CPU (s) |", "| --- | --- | --- | --- |"]
    rows += [f"| `{s}` | {wall[s]:.1f} | {cpu[s]:.1f} | {', '.join(f'{w:.1f} / {c:.1f}' for w, c in times[s])} |" for s in SETTINGS]
    overhead = {name: (m["mlflow"] - m["off"], 100 * (m["mlflow"] - m["off"]) / m["off"]) for name, m in (("wall", wall), ("CPU", cpu))}
    return (f"## Tracking overhead: the default run ({args.rounds} rounds, torch_threads=1), median of {args.repeats}\n\n"
            f"`python benchmarks/tracking_overhead.py --repeats {args.repeats} --rounds {args.rounds}`\n\n{machine}\n"
            + "\n".join(rows) + "\n\nOverhead of `tracking=mlflow` (local SQLite store): "
            + ", ".join(f"{d:+.1f} s {name} time ({p:+.1f} %)" for name, (d, p) in overhead.items())
            + f"; target <= 3 % wall time. Load average at the end: {load_average()}.\n\n"
            f"The tracker's own calls (`tracking/seconds` of each tracked run: opening the store, params, every round, "
            f"the final metrics and artefacts): {', '.join(f'{s:.2f}' for s in own)} s, median {statistics.median(own):.2f} s = "
            f"{100 * statistics.median(own) / wall['off']:.1f} % of the untracked run's median wall time.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats must be >= 1")
    machine = describe()
    with tempfile.TemporaryDirectory() as folder:
        outputs = Path(folder)
        run_once("mlflow", args.rounds, outputs, "warm-up")  # data generated, caches warm, the store created
        times: dict[str, list[tuple[float, float]]] = {s: [] for s in SETTINGS}
        for repeat in range(args.repeats):
            for setting in SETTINGS:
                times[setting].append(run_once(setting, args.rounds, outputs, f"{setting}-{repeat}"))
                print(f"tracking={setting}: {times[setting][-1][0]:.1f} s wall, {times[setting][-1][1]:.1f} s CPU", flush=True)
        own = tracker_seconds(outputs, args.repeats)
    text = table(times, own, args, machine)
    out = ROOT / "benchmarks" / "results" / "tracking_overhead.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
