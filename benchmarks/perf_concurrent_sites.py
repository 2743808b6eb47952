"""Item 6: a round's sites trained concurrently on one device (federation/concurrent.py) vs one after another.

    python benchmarks/perf_concurrent_sites.py            # the table for this machine
    python benchmarks/run_all.py --only gpu --update      # the same, as section 6 of performance.md

The same federation (config, seed, start weights) runs R rounds with
`concurrent_sites` = 1 (sequential), 2 and all sites, interleaved and repeated;
the table gives median wall seconds per round and the final model's test
accuracy (mean over sites), which must agree with the sequential run's within noise (threads share
torch's global generator, so dropout draws differ). On a GPU every worker has its
own model replica and CUDA stream (`trainer=gpu`); without one, the rows measure
CPU threads instead and say so: the issue's figure is the GPU one.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from flower_rounds import HEART
from perf_common import SMOKE, build_federation, config, markdown_table

from federation.engine import InProcessEngine
from federation.evaluation import evaluate
from federation.state import get_state, set_state, trainable_keys
from federation.training_env import evaluation_device, local_limits

SUITES = {
    "default model, tiny consortium (smoke)": [*SMOKE, "federation.rounds=2", "federation.local_epochs=2"],
    "heart logistic regression (FLamby)": ["experiment=heart_flamby", "progress=false", "federation.rounds=2", "seeds=null",
                                           f"data.root={HEART.resolve()}"],
}


def one_run(fed, start: dict, concurrent_sites: int, device: str) -> tuple[float, float]:
    """Seconds per round and the final global model's test accuracy, mean over sites."""
    from hydra.utils import instantiate

    set_state(fed.module, start)
    cfg = fed.cfg
    engine = InProcessEngine(fed.sites, fed.module, instantiate(cfg.federation.strategy), cfg.federation.rounds,
                             local_limits(cfg.federation), cfg.seed, device, concurrent_sites=concurrent_sites)
    started = time.perf_counter()
    result = engine.run(progress=False)
    seconds = (time.perf_counter() - started) / cfg.federation.rounds
    set_state(fed.module, result.global_state)
    accuracies = [evaluate(fed.module.model, site.loader("test"), device)["accuracy"] for site in fed.sites]
    return seconds, sum(accuracies) / len(accuracies)


def measure(label: str, overrides: list[str], repeats: int) -> list[list]:
    gpu = torch.cuda.is_available()
    fed = build_federation(config(overrides + (["trainer=gpu"] if gpu else [])))
    device = evaluation_device(fed.cfg.trainer.accelerator)
    start = get_state(fed.module, trainable_keys(fed.module))
    levels = sorted({1, 2, len(fed.sites)})
    one_run(fed, start, 1, device)  # warm-up: first-call costs (kernels, caches) are nobody's
    seconds = {k: [] for k in levels}
    accuracy = {k: [] for k in levels}
    for _ in range(repeats):
        for k in levels:
            s, a = one_run(fed, start, k, device)
            seconds[k].append(s)
            accuracy[k].append(a)
    base = statistics.median(seconds[1])
    where = torch.cuda.get_device_name(0) if gpu else f"CPU threads ({torch.get_num_threads()} torch threads each)"
    return [[label, where, k, f"{statistics.median(seconds[k]):.2f}", f"{base / statistics.median(seconds[k]):.2f}x",
             f"{statistics.mean(accuracy[k]):.3f}"] for k in levels]


def run(quick: bool) -> str:
    repeats = 1 if quick else 3
    rows = [row for label, overrides in SUITES.items() for row in measure(label, list(overrides), repeats)]
    header = ["federation", "device", "sites at once", "s per round (median)", "speed-up vs 1", "test accuracy (mean over sites)"]
    note = ("" if torch.cuda.is_available() else
            "No GPU on this machine: the rows are CPU threads, not the issue's GPU measurement, which stays open "
            "until a run on a GPU machine (the same command) fills this section.\n\n")
    return ("## 6. Concurrent sites on one device\n\n" + __doc__.split("\n\n", 2)[2].strip() + "\n\n" + note
            + f"{repeats} repeat(s), interleaved.\n\n" + markdown_table(header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
