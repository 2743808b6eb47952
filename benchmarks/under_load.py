"""The default job quiet and beside CPU-bound neighbours, for each torch thread setting: is the default robust to a busy machine?

    python benchmarks/under_load.py                       # torch_threads null (one per core), 1 and auto; quiet vs 1 neighbour
    python benchmarks/under_load.py --threads null 1 2 --neighbours 0 1 2 --repeats 3

Each cell is the median wall time (s) of `--repeats` runs of `scripts/train.py` with the
default config cut to `--rounds` rounds and no baselines (what a site's rounds cost),
each in a fresh process; a neighbour is `yes > /dev/null`, one per requested core,
started before the run and stopped after it. Runs are interleaved across settings so a
change in the machine's own load hits every setting alike. The table goes to
benchmarks/results/under_load.md, with the machine it was measured on.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from perf_machine import describe  # noqa: E402


def run_once(threads: str, neighbours: int, rounds: int) -> float:
    busy = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(neighbours)]
    try:
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, str(ROOT / "scripts" / "train.py"), f"torch_threads={threads}", f"federation.rounds={rounds}",
                       "baselines.local=false", "baselines.pooled=false", "adaptation.enabled=false", "progress=false",
                       f"hydra.run.dir={out}/run"]
            started = time.perf_counter()
            subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return time.perf_counter() - started
    finally:
        for process in busy:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", nargs="+", default=["null", "1", "auto"], help="torch_threads values (null: torch's default)")
    parser.add_argument("--neighbours", nargs="+", type=int, default=[0, 1], help="CPU-bound neighbour processes")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.rounds < 1 or args.repeats < 1 or any(n < 0 for n in args.neighbours):
        parser.error("--rounds and --repeats must be >= 1 and --neighbours >= 0")
    machine = describe()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "federation.rounds=0", "baselines.epochs=1", "baselines.pooled=false",
                    "adaptation.enabled=false", "progress=false", f"hydra.run.dir={tempfile.mkdtemp()}"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # data generated and caches warm before timing
    cells = [(t, n) for n in args.neighbours for t in args.threads]
    times: dict[tuple[str, int], list[float]] = {c: [] for c in cells}
    for _ in range(args.repeats):
        for cell in cells:
            times[cell].append(run_once(cell[0], cell[1], args.rounds))
            print(f"torch_threads={cell[0]}, {cell[1]} neighbours: {times[cell][-1]:.0f} s", flush=True)
    header = ["torch_threads", *(f"{n} CPU-bound neighbour{'s' if n != 1 else ''} (s)" for n in args.neighbours)]
    rows = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for t in args.threads:
        rows.append("| " + " | ".join([t, *(f"{statistics.median(times[t, n]):.0f}" for n in args.neighbours)]) + " |")
    text = (f"## The default job under load ({args.rounds} rounds, no baselines), median of {args.repeats}\n\n"
            f"`python benchmarks/under_load.py --threads {' '.join(args.threads)} --neighbours {' '.join(map(str, args.neighbours))} "
            f"--rounds {args.rounds} --repeats {args.repeats}`\n\n{machine}\n" + "\n".join(rows) + "\n")
    out = ROOT / "benchmarks" / "results" / "under_load.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
