"""Wall time per round and bytes per site per round: the in-process engine, Flower on loopback, Flower's simulation runtime.

    python benchmarks/flower_rounds.py                          # heart (FLamby's protocol), 3 rounds, seed 0
    python benchmarks/flower_rounds.py --rounds 5 --out /tmp/flower_rounds.md
    python benchmarks/flower_rounds.py --skip-simulation       # without flwr[simulation] (Ray)
    python benchmarks/flower_rounds.py --secure                # also the deployment with secure aggregation

The same task, config and seed in every runtime (the same site-training and
strategy code): FLamby's Fed-Heart-Disease, four hospitals, logistic regression,
FedAvg with 100 local SGD steps, validation at every site each round. The
deployment runs real processes on 127.0.0.1 with TLS and node authentication;
the simulation column needs `flwr[simulation]` (Ray) and is skipped with a note
without it. `--secure` adds the deployment with FedAvg through secure aggregation
(`SecureFedAvg`, the same FedAvg otherwise): three more message rounds per round.
Writes a markdown table (default benchmarks/results/flower_rounds.md).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import tempfile
import time
from pathlib import Path

import torch

from federation.build import build_sites
from federation.engine import InProcessEngine
from federation.evaluation import evaluate
from federation.experiment import local_limits, quiet_lightning
from federation.flower import deployment as flower
from federation.flower.builder import build_module, build_strategy
from federation.flower.config import compose_config, join_overrides
from federation.flower.loopback import Loopback
from federation.flower.plan import consortium_plan
from federation.flower.run_folder import RunFolder
from modalities.consortium import load_consortium

ROOT = Path(__file__).resolve().parents[1]
LOAD_AT_START = os.getloadavg()[0]  # other work on the machine slows the process-per-message runtimes most
HEART = Path(os.environ.get("RAREFED_SHARED_DATA", ROOT.parent / "shared" / "data")) / "heart"


def consortium(rounds: int, seed: int, data_root: Path) -> list[str]:
    return ["experiment=heart_flamby", f"data.root={data_root.resolve()}", "seeds=null", f"seed={seed}", f"federation.rounds={rounds}"]


def in_process(overrides: list[str]) -> dict:
    cfg = compose_config("train", overrides)
    data = load_consortium(cfg.data, seed=cfg.seed)
    module = build_module(cfg, consortium_plan(cfg.data))
    sites = build_sites(cfg, data, module)
    strategy, participation, validator = build_strategy(cfg)
    engine = InProcessEngine(sites, module, strategy, cfg.federation.rounds, local_limits(cfg.federation), cfg.seed,
                             participation=participation, validator=validator)
    started = time.perf_counter()
    engine.run(progress=False)
    seconds = time.perf_counter() - started
    accuracy = _mean(evaluate(module.model, s.loader("test"))["accuracy"] for s in sites)
    return {"runtime": "in-process engine", "per_round": seconds / cfg.federation.rounds, "total": seconds,
            "down": None, "up": None, "accuracy": accuracy, "note": "one process; no transport"}


SECURE = ["federation.strategy._target_=federation.strategies.secure_fedavg.SecureFedAvg"]
"""FedAvg through secure aggregation, with SecureFedAvg's defaults (t = 60 % of the sites, clip bound 100, 2^-20 precision)."""


def loopback(overrides: list[str], work: Path, name: str = "Flower deployment, loopback (TLS, node auth)") -> dict:
    own = [f"deploy.run_dir={work / 'loopback'}", f"deploy.certificates={work / 'certs'}",
           f"deploy.superlink.port={flower.free_port()}", f"deploy.loopback.first_node_port={flower.free_port()}"]
    started = time.perf_counter()
    with Loopback(compose_config("deploy/loopback", overrides + own), overrides, own) as deployment:
        up = time.perf_counter() - started
        status = deployment.run()
    if status["state"] != "finished":
        raise RuntimeError(f"the loopback run did not finish: {status}")
    return _from_run_folder(name, deployment.run_dir, time.perf_counter() - started,
                            f"{up:.0f} s to start the SuperLink and SuperNodes; a process per message")


def simulation(overrides: list[str], work: Path, n_sites: int) -> dict:
    """The same ServerApp and ClientApp on Flower's simulation runtime (virtual SuperNodes, Ray)."""
    home, run_dir = work / "simulation_home", work / "simulation"
    home.mkdir(parents=True, exist_ok=True)
    connection = {"address": ":local:", "options": {"num-supernodes": n_sites}}
    (home / "config.toml").write_text(_toml({"superlink": {"default": flower.CONNECTION, flower.CONNECTION: connection}}))
    own = [f"deploy.run_dir={run_dir}", "deploy.auth.enabled=false", "deploy.tls.enabled=false"]
    started = time.perf_counter()
    try:
        flower.submit_run(home, {"consortium": join_overrides(overrides), "coordinator": join_overrides(own)}, work / "simulation_run.toml")
        status = _wait(RunFolder(run_dir), started)
    finally:
        _stop_local_superlinks(home)
    if status.get("state") != "finished":
        raise RuntimeError(f"the simulation run did not finish: {status}")
    return _from_run_folder("Flower simulation runtime", run_dir, time.perf_counter() - started, "virtual SuperNodes on Ray")


def _from_run_folder(name: str, run_dir: Path, total: float, note: str) -> dict:
    rounds = json.loads((run_dir / "rounds.json").read_text())["rounds"]
    final = json.loads((run_dir / "final_metrics.json").read_text())
    traffic = [site["bytes"] for r in rounds for site in r["sites"].values() if site["bytes"]]
    return {"runtime": name, "per_round": _mean(sum(r["seconds"].values()) for r in rounds), "total": total,
            "down": _mean(t["down"] for t in traffic), "up": _mean(t["up"] for t in traffic),
            "accuracy": _mean(m["accuracy"] for m in final.values()), "note": note}


def table(rows: list[dict], skipped: list[str], rounds: int, seed: int) -> str:
    machine = f"{os.cpu_count()} cores, load average {LOAD_AT_START:.1f} at the start"
    lines = [f"Fed-Heart-Disease (4 sites, logistic regression, FedAvg, 100 local steps), {rounds} rounds, seed {seed}, "
             f"on this machine ({machine}), {time.strftime('%Y-%m-%d')}.", "",
             "| runtime | wall s per round | whole run s | bytes to a site per round | bytes from a site per round | test accuracy (mean over sites) | note |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        down, up = (f"{r['down']:.0f}" if r["down"] is not None else "—"), (f"{r['up']:.0f}" if r["up"] is not None else "—")
        lines.append(f"| {r['runtime']} | {r['per_round']:.1f} | {r['total']:.1f} | {down} | {up} | {r['accuracy']:.3f} | {r['note']} |")
    lines += [""] + [f"- {note}" for note in skipped]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=HEART, help="the folder of the four processed.*.data files")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "flower_rounds.md")
    parser.add_argument("--skip-simulation", action="store_true")
    parser.add_argument("--secure", action="store_true", help="also the deployment with secure aggregation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_lightning()
    overrides = consortium(args.rounds, args.seed, args.data)
    rows, skipped = [in_process(overrides)], []
    with tempfile.TemporaryDirectory(prefix="flower_rounds_") as work:
        rows.append(loopback(overrides, Path(work) / "plain"))
        if args.secure:
            rows.append(loopback(overrides + SECURE, Path(work) / "secure", "Flower deployment, loopback, secure aggregation"))
        if args.skip_simulation:
            skipped.append("Flower simulation runtime: skipped (--skip-simulation)")
        elif not _simulation_installed():
            skipped.append("Flower simulation runtime: not measured, `flwr[simulation]` (Ray) is not installed here")
        else:
            rows.append(simulation(overrides, Path(work), len(consortium_plan(compose_config("train", overrides).data).sites)))
    text = table(rows, skipped, args.rounds, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


def _simulation_installed() -> bool:
    try:
        import ray  # noqa: F401

        return True
    except ImportError:
        return False


def _wait(folder: RunFolder, started_at: float, timeout_s: float = 3600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = folder.read_status()
        if status.get("state") in ("finished", "failed"):
            return status
        time.sleep(2)
    raise TimeoutError(f"no result in {folder.path} after {timeout_s} s")


def _stop_local_superlinks(home: Path) -> None:
    """`flwr run` on a `:local:` connection leaves a detached SuperLink (ours, started with this FLWR_HOME) running."""
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            mine = f"FLWR_HOME={home}".encode() in environ.read_bytes().split(b"\0")
            if mine and b"flower-superlink" in (environ.parent / "cmdline").read_bytes():
                os.kill(int(environ.parent.name), signal.SIGTERM)
        except (OSError, ProcessLookupError):
            continue


def _toml(data: dict) -> str:
    import tomli_w

    return tomli_w.dumps(data)


def _mean(values) -> float:
    values = [float(v) for v in values if v == v]
    return sum(values) / len(values) if values else float("nan")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
