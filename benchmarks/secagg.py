"""Secure aggregation vs plain FedAvg: time and bytes per round at 5, 10 and 50 sites, on the default model.

    python benchmarks/secagg.py                 # 5, 10, 50 sites; table to benchmarks/results/secagg.md
    python benchmarks/secagg.py --sites 5 10    # fewer rows

The updates have the default model's trainable keys and shapes (conf/train.yaml,
all five modalities, every site holding every key: the most masking work). The
round time adds the measured local training of the default consortium's slowest
site (sites train in parallel in a deployment; each site's second fit, after a
warm-up fit, as in every round after the first), so the ratio answers "how much
longer does a round take with secure aggregation". Bytes are the serialised
messages a site sends (federation/privacy/egress.py); no network time is modelled.
Aggregation times are the fastest of --repeats runs on one thread.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from federation.privacy.egress import serialise_message, serialise_update  # noqa: E402
from federation.privacy.secagg import SecAggClient, SecAggServer, run_secure_aggregation  # noqa: E402
from federation.site import Site  # noqa: E402
from federation.state import get_state, trainable_keys  # noqa: E402
from federation.strategies.fedavg import FedAvg  # noqa: E402
from federation.training_env import local_limits, quiet_lightning  # noqa: E402
from federation.update import ModelUpdate  # noqa: E402
from modalities.consortium import load_consortium  # noqa: E402
from modalities.dataset import collate_batch  # noqa: E402
from models.builder import build_model  # noqa: E402
from models.lit_module import MultimodalLitModule  # noqa: E402

CLIENT_STEPS = ("advertise", "share_keys", "receive_shares", "masked_input", "unmask")
SERVER_STEPS = ("roster", "route", "unmask_request", "unmask")


def default_setup():
    """The default config, its consortium, the global state, and one local fit per site (seconds)."""
    quiet_lightning()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["progress=false"])
    consortium = load_consortium(cfg.data, seed=cfg.seed)
    model = build_model(cfg.model, consortium.modalities, consortium.label_space.labels)
    module = MultimodalLitModule(model, optimizer=instantiate(cfg.model.optimizer), **cfg.model.get("training", {}))
    collate = partial(collate_batch, modalities=model.modalities, readers=consortium.readers)
    state = get_state(module, trainable_keys(module))
    fits = {}
    for i, data in enumerate(consortium.sites):
        site = Site(data, collate, cfg.data.batch_size, instantiate(cfg.trainer))
        site.train(module, state, local_limits(cfg.federation), 1, seed=i)  # warm-up: round 1's one-off costs (e.g. caches)
        started = time.perf_counter()
        site.train(module, state, local_limits(cfg.federation), 1, seed=i)
        fits[site.name] = time.perf_counter() - started
    return state, fits


def synthetic_updates(state: dict, n_sites: int) -> list[ModelUpdate]:
    g = torch.Generator().manual_seed(n_sites)
    return [ModelUpdate(f"site_{i:02d}", 1, {k: torch.randn(v.shape, generator=g) * 1e-3 for k, v in state.items()},
                        {k: 50 + i for k in state}, 50 + i) for i in range(n_sites)]


class Stopwatch:
    """Wraps an object's protocol methods and adds up their wall time."""

    def __init__(self, target, methods):
        self.target, self.seconds = target, 0.0
        for name in methods:
            setattr(self, name, self._timed(getattr(target, name)))

    def _timed(self, method):
        def run(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
        return run

    def __getattr__(self, name):
        return getattr(self.target, name)


def measure(state: dict, n_sites: int, repeats: int) -> dict:
    """Plain and secure aggregation of one round's updates; the fastest of `repeats` runs (the machine is shared)."""
    updates = synthetic_updates(state, n_sites)
    plain = []
    for _ in range(repeats):
        started = time.perf_counter()
        FedAvg().combine(updates)
        plain.append(time.perf_counter() - started)
    secure = [secure_round(updates) for _ in range(repeats)]
    fastest = min(secure, key=lambda r: r["site_seconds"] + r["coordinator_seconds"])
    return {"sites": n_sites, "params": sum(v.numel() for v in state.values()), "plain_coordinator": min(plain),
            "plain_bytes": statistics.mean(len(serialise_update(u)) for u in updates)} | fastest


def secure_round(updates: list[ModelUpdate]) -> dict:
    clients = [Stopwatch(SecAggClient(u.site, u.deltas, u.sample_counts), CLIENT_STEPS) for u in updates]
    server = Stopwatch(SecAggServer(threshold=0.6), SERVER_STEPS)
    sent = {u.site: 0 for u in updates}
    run_secure_aggregation(clients, server, 1, observe=lambda site, m: sent.__setitem__(site, sent[site] + len(serialise_message(m))))
    return {"site_seconds": statistics.mean(c.seconds for c in clients), "coordinator_seconds": server.seconds,
            "secure_bytes": statistics.mean(sent.values())}


def markdown(rows: list[dict], fits: dict[str, float]) -> str:
    train = max(fits.values())
    lines = [
        "| sites | parameters | bytes/site plain | bytes/site secure | coordinator plain (s) | site protocol (s) | coordinator secure (s) "
        "| aggregation ratio | round plain (s) | round secure (s) | round ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        plain = train + r["plain_coordinator"]
        secure = train + r["site_seconds"] + r["coordinator_seconds"]
        lines.append(
            f"| {r['sites']} | {r['params']:,} | {r['plain_bytes'] / 1e6:.1f} MB | {r['secure_bytes'] / 1e6:.1f} MB | {r['plain_coordinator']:.2f} | "
            f"{r['site_seconds']:.2f} | {r['coordinator_seconds']:.2f} | {(r['site_seconds'] + r['coordinator_seconds']) / r['plain_coordinator']:.1f}x | "
            f"{plain:.1f} | {secure:.1f} | {secure / plain:.2f}x |"
        )
    fit_list = ", ".join(f"{k} {v:.1f} s" for k, v in fits.items())
    return "\n".join(lines) + (
        f"\n\nRound = the slowest site's local training ({train:.1f} s; measured per site after a warm-up fit: {fit_list}; "
        "default config, sites in parallel) + the site's protocol steps + the coordinator's. In-process, where sites run one after "
        "another, the protocol adds sites x site protocol + coordinator seconds to a round.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[5, 10, 50])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "secagg.md")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    state, fits = default_setup()
    torch.set_num_threads(1)  # aggregation on one core for both paths: the protocol's AES and numpy are single-threaded
    table = markdown([measure(state, n, args.repeats) for n in args.sites], fits)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
