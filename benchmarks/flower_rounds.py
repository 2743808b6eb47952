"""Wall time per round and bytes per site per round: the in-process engine, Flower on loopback, Flower's simulation runtime.

    python benchmarks/flower_rounds.py                          # heart (FLamby's protocol), 3 rounds, seed 0
    python benchmarks/flower_rounds.py --rounds 5 --out /tmp/flower_rounds.md
    python benchmarks/flower_rounds.py --skip-simulation       # without flwr[simulation] (Ray)
    python benchmarks/flower_rounds.py --secure                # also the deployment with secure aggregation
    python benchmarks/flower_rounds.py --flower-defaults       # also the deployment as before: no site cache, Flower's polls
    python benchmarks/flower_rounds.py --warm                  # also the deployment with warm ClientApp processes (forked)

The same task, config and seed in every runtime (the same site-training and
strategy code): FLamby's Fed-Heart-Disease, four hospitals, logistic regression,
FedAvg with 100 local SGD steps, validation at every site each round. The
deployment runs real processes on 127.0.0.1 with TLS and node authentication;
the simulation column needs `flwr[simulation]` (Ray) and is skipped with a note
without it. `--secure` adds the deployment with FedAvg through secure aggregation
(`SecureFedAvg`, the same FedAvg otherwise): three more message rounds per round.

For every deployment row, where a message's time goes: the sites' timing logs
and the coordinator's message journal (federation/flower/timing.py), joined by
message id, split each message into getting to the site's process (Flower's
polls and process start), Flower's start inside it, our imports, config, model,
data (the node cache), the work, and getting the reply back; and
`python -X importtime` of the ClientApp says which packages the imports are.
Writes markdown tables (default benchmarks/results/flower_rounds.md).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from federation.build import build_sites
from federation.engine import InProcessEngine
from federation.evaluation import evaluate
from federation.flower import deployment as flower
from federation.flower.builder import build_module, build_strategy
from federation.flower.config import compose_config, join_overrides
from federation.flower.loopback import Loopback
from federation.flower.plan import consortium_plan
from federation.flower.run_folder import RunFolder
from federation.flower.timing import PHASES, read_lines
from federation.training_env import local_limits, quiet_lightning
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


FLOWER_DEFAULTS = ["deploy.superlink.superexec_poll_s=null", "deploy.rounds.reply_poll_s=3",
                   "deploy.loopback.site_overrides=['deploy.site_cache.enabled=false','deploy.poll.superexec_s=null']"]
"""The deployment as it ran before the node cache and the poll settings (the leaner imports stay: they are code, not config)."""
WARM = ["deploy.loopback.site_overrides=['deploy.clientapp.warm=true']"]
"""Each message's ClientApp process forked from one that imported the stack once (federation/flower/warm_exec.py)."""


def loopback(overrides: list[str], work: Path, name: str = "Flower deployment, loopback (TLS, node auth)", deploy: list[str] = ()) -> dict:
    own = [f"deploy.run_dir={work / 'loopback'}", f"deploy.certificates={work / 'certs'}",
           f"deploy.superlink.port={flower.free_port()}", f"deploy.loopback.first_node_port={flower.free_port()}", *deploy]
    started = time.perf_counter()
    with Loopback(compose_config("deploy/loopback", overrides + own), overrides, own) as deployment:
        up = time.perf_counter() - started
        status = deployment.run()
    if status["state"] != "finished":
        raise RuntimeError(f"the loopback run did not finish: {status}")
    process = "a process per message, forked from a warm one" if list(deploy) == WARM else "a process per message"
    row = _from_run_folder(name, deployment.run_dir, time.perf_counter() - started, f"{up:.0f} s to start the SuperLink and SuperNodes; {process}")
    return row | {"messages": message_times(deployment.run_dir, deployment.sites)}


def message_times(run_dir: Path, sites: list[str]) -> list[dict]:
    """Each message's phases in seconds, from the coordinator's journal joined with the site's timing log."""
    journal = {line["message_id"]: line for line in read_lines(run_dir / "messages.jsonl")}
    rows = []
    for site in sites:
        for line in read_lines(run_dir / "sites" / site / "timing.jsonl"):
            sent = journal.get(line["message_id"])
            if sent is None or sent.get("replied") is None or line.get("process_start") is None:
                continue
            rows.append({"site": site, "kind": line["kind"], "cache": line.get("cache"), **phases(sent, line)})
    return rows


def phases(sent: dict, line: dict) -> dict[str, float | None]:
    """A message's seconds per phase; None for the handler phases a message kind does not have (secure-aggregation steps)."""
    marks = [(p, line[f"{p}_done"]) for p in PHASES if f"{p}_done" in line]
    times = [line["handler_start"]] + [t for _, t in marks]
    steps = {p: None for p in PHASES} | {p: b - a for (p, b), a in zip(marks, times)}
    return {
        "to_process": line["process_start"] - sent["sent"],
        "flower_start": (line["imports_start"] - line["process_start"]) + (line["handler_start"] - line["imports_done"]),
        "imports": line["imports_done"] - line["imports_start"],
        **steps,
        "handler_rest": line["reply_done"] - times[-1],
        "back": sent["replied"] - line["reply_done"],
        "total": sent["replied"] - sent["sent"],
    }


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


BREAKDOWN = [("to_process", "to the site's process"), ("flower_start", "Flower in the process"), ("imports", "imports"),
             ("config", "config"), ("model", "model"), ("data", "data"), ("work", "train / evaluate"),
             ("handler_rest", "rest of the handler"), ("back", "reply back to the coordinator"), ("total", "message total")]


def breakdown(rows: list[dict]) -> list[str]:
    """Mean seconds per phase of a message, per deployment row and message kind."""
    lines = ["Where a message's time goes (seconds, mean over sites and rounds; one process per message):", "",
             "To the site's process: from the coordinator's push to the start of the ClientApp process (the SuperNode's poll, "
             "the SuperExec's poll, the process start or fork). Flower in the process: pulling the task, installing the app "
             "bundle, loading the app. Rest of the handler: the reply's records, the egress check, a secure-aggregation step's "
             "work. Reply back: to the SuperNode, its wait loop, the SuperLink, the coordinator's poll.", "",
             "| runtime | message | n | " + " | ".join(label for _, label in BREAKDOWN) + " | site cache |",
             "| --- | --- | --- | " + " | ".join("---" for _ in BREAKDOWN) + " | --- |"]
    for row in rows:
        kinds = sorted({m["kind"] for m in row.get("messages", [])}, key=lambda k: (k != "train", k != "evaluate", k))
        for kind in kinds:
            ms = [m for m in row["messages"] if m["kind"] == kind]
            cells = " | ".join(_cell([m[key] for m in ms]) for key, _ in BREAKDOWN)
            hits = [m["cache"] for m in ms if m["cache"]]
            cache = f"{hits.count('hit')}/{len(hits)} hits" if hits else "—"
            lines.append(f"| {row['runtime']} | {kind} | {len(ms)} | {cells} | {cache} |")
    return lines


POLL_NOTES = [
    "Poll intervals (flwr 1.42). Set: the SuperExec's task poll, 1 s by default, through the environment variable "
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL (deploy.poll.superexec_s at a site, deploy.superlink.superexec_poll_s at the "
    "coordinator: 0.1 s); the coordinator's wait for replies, Flower's send_and_receive sleeping 3 s between pulls, "
    "replaced by push and pull every deploy.rounds.reply_poll_s (0.2 s). Not exposed: the SuperNode's poll of the "
    "SuperLink when it has no message (3 s) and its wait for a ClientApp's reply (0.5 s), both fixed in "
    "flwr/supernode/start_client_internal.py; the Runtime API's own 0.25 s. The \"no site cache, Flower's polls\" row "
    "turns off what config can turn off; the leaner ClientApp imports and torch_threads at the sites are code and apply "
    "to every row.",
]
OURS = ("federation", "models", "modalities")


def import_share(top: int = 8) -> list[str]:
    """`python -X importtime` of the ClientApp module, as a message's fresh process imports it: self time summed per package."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import federation.flower.client_app"],
                          capture_output=True, text=True, cwd=ROOT)
    per_package: dict[str, float] = {}
    for line in done.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        package = parts[2].split(".")[0]
        package = "ours (federation, models, modalities)" if package in OURS else package
        per_package[package] = per_package.get(package, 0.0) + int(parts[0]) / 1e6
    total = sum(per_package.values())
    largest = sorted(((s, n) for n, s in per_package.items()), reverse=True)[:top]
    return [f"Imports of the ClientApp module (`python -X importtime -c 'import federation.flower.client_app'`, which itself "
            f"slows imports): {total:.2f} s, by package (self time summed): " + ", ".join(f"{n} {s:.2f} s" for s, n in largest) + "."]


def table(rows: list[dict], skipped: list[str], rounds: int, seed: int, extra: list[str] = ()) -> str:
    machine = f"{os.cpu_count()} cores, load average {LOAD_AT_START:.1f} at the start"
    lines = [f"Fed-Heart-Disease (4 sites, logistic regression, FedAvg, 100 local steps), {rounds} rounds, seed {seed}, "
             f"on this machine ({machine}), {time.strftime('%Y-%m-%d')}.", "",
             "| runtime | wall s per round | whole run s | bytes to a site per round | bytes from a site per round | test accuracy (mean over sites) | note |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        down, up = (f"{r['down']:.0f}" if r["down"] is not None else "—"), (f"{r['up']:.0f}" if r["up"] is not None else "—")
        lines.append(f"| {r['runtime']} | {r['per_round']:.1f} | {r['total']:.1f} | {down} | {up} | {r['accuracy']:.3f} | {r['note']} |")
    lines += [""] + [f"- {note}" for note in skipped]
    if any(r.get("messages") for r in rows):
        lines += [""] + breakdown(rows)
    lines += [""] + list(extra)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=HEART, help="the folder of the four processed.*.data files")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "flower_rounds.md")
    parser.add_argument("--skip-simulation", action="store_true")
    parser.add_argument("--secure", action="store_true", help="also the deployment with secure aggregation")
    parser.add_argument("--flower-defaults", action="store_true",
                        help="also the deployment as before: no site cache, Flower's own poll intervals")
    parser.add_argument("--warm", action="store_true", help="also the deployment with ClientApp processes forked from a warm one")
    parser.add_argument("--skip-in-process", action="store_true", help="only the Flower runtimes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_lightning()
    overrides = consortium(args.rounds, args.seed, args.data)
    rows, skipped = ([] if args.skip_in_process else [in_process(overrides)]), []
    extra = import_share()
    with tempfile.TemporaryDirectory(prefix="flower_rounds_") as work:
        if args.flower_defaults:
            rows.append(loopback(overrides, Path(work) / "defaults", "Flower deployment, loopback (TLS, node auth), no site cache, "
                                 "Flower's polls", FLOWER_DEFAULTS))
        rows.append(loopback(overrides, Path(work) / "plain"))
        if args.warm:
            rows.append(loopback(overrides, Path(work) / "warm", "Flower deployment, loopback (TLS, node auth), warm ClientApp", WARM))
        if args.warm and args.secure:
            rows.append(loopback(overrides + SECURE, Path(work) / "secure_warm", "Flower deployment, loopback, secure aggregation, "
                                 "warm ClientApp", WARM))
        if args.secure:
            rows.append(loopback(overrides + SECURE, Path(work) / "secure", "Flower deployment, loopback, secure aggregation"))
        if args.skip_simulation:
            skipped.append("Flower simulation runtime: skipped (--skip-simulation)")
        elif not _simulation_installed():
            skipped.append("Flower simulation runtime: not measured, `flwr[simulation]` (Ray) is not installed here")
        else:
            rows.append(simulation(overrides, Path(work), len(consortium_plan(compose_config("train", overrides).data).sites)))
    command = "python benchmarks/flower_rounds.py " + " ".join(sys.argv[1:])
    text = table(rows, skipped, args.rounds, args.seed, extra + [""] + POLL_NOTES + ["", f"Command: `{command.strip()}`"])
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


def _cell(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    return f"{_mean(values):.2f}" if values else "—"


def _mean(values) -> float:
    values = [float(v) for v in values if v == v]
    return sum(values) / len(values) if values else float("nan")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
