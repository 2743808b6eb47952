"""The deployment as real processes on loopback: a SuperLink with TLS and node authentication, one SuperNode per
site, `flwr run` of the rarefed app; a site and the coordinator crash mid-run; secure aggregation and DP-SGD.

Slow (minutes each: Flower starts a process per message and polls every 3 s).
Each test has its own run folder, FLWR_HOME, certificates and free ports, and
stops every process it started, also when it fails. Timeouts are hang protection
only; the assertions are about what the run recorded and the model it ended with.
"""
from __future__ import annotations

import json
import runpy
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_flower import (
    SITES,
    consortium_overrides,
    in_process_run,
    write_table_consortium,
)

from federation.evaluation import evaluate
from federation.flower import deployment as flower
from federation.flower.builder import build_module
from federation.flower.config import SITE_CONFIG, compose_config
from federation.flower.launch import start_coordinator, start_site
from federation.flower.loopback import Loopback, make_certificates
from federation.flower.plan import consortium_plan
from federation.flower.run_folder import RunFolder
from federation.flower.timing import read_lines
from federation.governance.ledger import ROUND, read_ledger
from federation.governance.registry import Registry
from federation.round_record import ACCEPTED, FAILED

pytestmark = pytest.mark.slow
verify_ledger = runpy.run_path(str(Path(__file__).resolve().parents[2] / "scripts" / "verify_ledger.py"))["main"]
HANG_S = 1800  # hang protection for one run on a loaded machine; no test relies on it


@pytest.fixture(scope="module")
def table_root(tmp_path_factory) -> Path:
    return write_table_consortium(tmp_path_factory.mktemp("tables"))


def loopback(tmp_path: Path, consortium: list[str], *deploy: str) -> Loopback:
    own = [f"deploy.run_dir={tmp_path / 'run'}", f"deploy.certificates={tmp_path / 'certs'}",
           f"deploy.superlink.port={flower.free_port()}", f"deploy.loopback.first_node_port={flower.free_port()}",
           "deploy.rounds.reply_timeout_s=900", *deploy]
    return Loopback(compose_config("deploy/loopback", consortium + own), consortium, own)


def wait_for(condition, what: str, timeout_s: float = HANG_S, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(poll_s)


def rounds_of(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "rounds.json").read_text())["rounds"]


def assert_same_model(run_dir: Path, module) -> None:
    deployed = load_file(str(run_dir / "model.safetensors"))
    reference = module.model.state_dict()
    assert set(deployed) == set(reference)
    for key, value in reference.items():
        torch.testing.assert_close(deployed[key], value, rtol=1e-5, atol=1e-6)


def test_three_sites_train_two_rounds_over_tls_and_match_the_in_process_engine(table_root, tmp_path):
    consortium = consortium_overrides(table_root, rounds=2)
    _, sites, module = in_process_run(consortium)
    cfg = compose_config("train", consortium)
    initial = build_module(cfg, consortium_plan(cfg.data))

    with loopback(tmp_path, consortium) as deployment:
        status = deployment.run()

    assert status["state"] == "finished", status
    run_dir = deployment.run_dir
    assert [r["decision"] for r in rounds_of(run_dir)] == ["accepted", "accepted"]
    assert all(site["status"] == ACCEPTED for r in rounds_of(run_dir) for site in r["sites"].values())
    assert_same_model(run_dir, module)
    final = json.loads((run_dir / "final_metrics.json").read_text())
    for site in sites:
        expected = evaluate(module.model, site.loader("test"))
        assert final[site.name]["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
        assert final[site.name]["macro_auroc"] == pytest.approx(expected["macro_auroc"], abs=1e-5)
    before = sum(evaluate(initial.model, s.loader("test"))["accuracy"] for s in sites)
    assert sum(final[s]["accuracy"] for s in SITES) > before  # the federated model learned something
    assert_messages_timed_and_cached(run_dir)


def test_a_governed_deployment_keeps_a_ledger_a_registry_and_a_dashboard(table_root, tmp_path):
    consortium = consortium_overrides(table_root, rounds=2) + ["governance=open"]

    with loopback(tmp_path, consortium, "deploy.governance=true") as deployment:
        status = deployment.run()

    assert status["state"] == "finished", status
    run_dir = deployment.run_dir
    entries = read_ledger(run_dir / "ledger.jsonl")
    assert verify_ledger([str(run_dir / "ledger.jsonl")]) == 0
    rounds = [e["data"] for e in entries if e["kind"] == ROUND]
    assert [r["decision"] for r in rounds] == [r["decision"] for r in rounds_of(run_dir)]
    assert all(r["participants"] == list(SITES) and "unavailable" in r["findings"] for r in rounds)
    accepted = sum(r["decision"] == "accepted" for r in rounds)
    assert Registry(run_dir / "registry").versions() == list(range(accepted + 1))  # the initial model, then each accepted round
    assert "Ledger verified" in (run_dir / "dashboard.html").read_text()


def assert_messages_timed_and_cached(run_dir: Path, forked: bool = False) -> None:
    """Every site timed each message it handled, the coordinator's journal has it, and only its first read the data files."""
    journal = {line["message_id"]: line for line in read_lines(run_dir / "messages.jsonl")}
    for site in SITES:
        lines = read_lines(run_dir / "sites" / site / "timing.jsonl")
        assert [line["kind"] for line in lines] == ["train", "evaluate", "train", "evaluate"]
        assert [line["cache"] for line in lines] == ["miss", "hit", "hit", "hit"]
        assert all(journal[line["message_id"]]["site"] == site and journal[line["message_id"]]["replied"] for line in lines)
        assert all(line.get("forked", False) == forked for line in lines)
        assert len(list((run_dir / "sites" / site / "cache").glob("*.pt"))) == 1


def test_clientapp_processes_forked_from_a_warm_one_end_with_the_same_model(table_root, tmp_path):
    consortium = consortium_overrides(table_root, rounds=2)
    _, _, module = in_process_run(consortium)

    with loopback(tmp_path, consortium, "deploy.loopback.site_overrides=['deploy.clientapp.warm=true']") as deployment:
        status = deployment.run()

    assert status["state"] == "finished", status
    assert all(site["status"] == ACCEPTED for r in rounds_of(deployment.run_dir) for site in r["sites"].values())
    assert_same_model(deployment.run_dir, module)
    assert_messages_timed_and_cached(deployment.run_dir, forked=True)


def test_a_node_without_a_registered_key_is_refused(table_root, tmp_path):
    consortium = consortium_overrides(table_root)
    cfg = loopback(tmp_path, consortium).cfg
    make_certificates(Path(cfg.deploy.certificates), "127.0.0.1", [*SITES, "intruder"])
    service = start_coordinator(cfg)  # registers the consortium's keys only
    nodes = []
    try:
        for site, key in (("north", "north"), ("south", "intruder")):
            site_cfg = compose_config(SITE_CONFIG, consortium + [
                f"deploy.site={site}", f"deploy.superlink=127.0.0.1:{cfg.deploy.superlink.port}", f"deploy.port={flower.free_port()}",
                f"deploy.flwr_home={tmp_path / site}", f"deploy.tls.root_certificates={cfg.deploy.tls.ca_cert}",
                f"deploy.auth.private_key={Path(cfg.deploy.auth.site_keys) / key}"])
            nodes.append(start_site(site_cfg, [], tmp_path / f"{site}.log"))
        registered, intruder = nodes

        wait_for(lambda: not intruder.alive(), "the SuperLink to refuse the unregistered node", timeout_s=300)

        assert intruder.popen.returncode != 0
        assert "Failed to activate SuperNode" in intruder.log_path.read_text()
        assert registered.alive()
    finally:
        for node in nodes:
            node.stop()
        service.stop()


def test_a_site_killed_mid_round_leaves_the_round_to_the_others(table_root, tmp_path):
    consortium = consortium_overrides(table_root, rounds=2) + ["federation.participation.min_sites=2"]

    with loopback(tmp_path, consortium) as deployment:
        run_id = deployment.service.submit(deployment.consortium, deployment.coordinator_overrides)
        east = deployment.nodes["east"]
        wait_for(lambda: "Receiving: train message" in east.log_path.read_text(), "site east to receive its first train message")
        deployment.kill_site("east")
        status = deployment.service.wait(run_id, HANG_S)

    assert status["state"] == "finished", status
    first, second = rounds_of(deployment.run_dir)
    assert first["decision"] == second["decision"] == "accepted"
    assert [first["sites"][s]["status"] for s in SITES] == [ACCEPTED, ACCEPTED, FAILED]
    assert first["sites"]["east"]["reason"]  # e.g. the SuperLink's "node unavailable" error reply
    assert second["sites"]["east"]["status"] == FAILED
    assert all(second["sites"][s]["status"] == ACCEPTED for s in ("north", "south"))


def test_a_coordinator_killed_mid_run_resumes_and_ends_as_an_uninterrupted_run(table_root, tmp_path):
    consortium = consortium_overrides(table_root, rounds=2, strategy="fedadam")  # server moments must survive the crash
    _, _, module = in_process_run(consortium)

    with loopback(tmp_path, consortium, "deploy.rounds.validate_every=0") as deployment:
        deployment.service.submit(deployment.consortium, deployment.coordinator_overrides)
        folder = RunFolder(deployment.run_dir)
        wait_for(lambda: folder.read_status().get("round") == 2, "round 1's checkpoint and round 2's start")
        deployment.kill_coordinator()
        deployment.restart_coordinator()
        status = deployment.run()

    assert status["state"] == "finished", status
    assert [r["round"] for r in rounds_of(deployment.run_dir)] == [1, 2]
    assert "resuming after round 1 of 2" in (deployment.run_dir / "coordinator.log").read_text()
    assert_same_model(deployment.run_dir, module)


def test_secure_aggregation_with_dp_sgd_sites_matches_the_in_process_engine_and_records_epsilon(table_root, tmp_path):
    """Two rounds of secure_fedavg over Flower messages (a process per protocol step), each site training with DP-SGD."""
    consortium = consortium_overrides(table_root, rounds=2, strategy="secure_fedavg", privacy="dp_sgd") + ["privacy.epsilon=5.0", "privacy.delta=1e-2"]
    reference, _, module = in_process_run(consortium)

    with loopback(tmp_path, consortium, "deploy.rounds.validate_every=0") as deployment:
        status = deployment.run()

    assert status["state"] == "finished", status
    rounds = rounds_of(deployment.run_dir)
    assert [r["decision"] for r in rounds] == ["accepted", "accepted"]
    assert all(site["status"] == ACCEPTED for r in rounds for site in r["sites"].values())
    assert all(r["seconds"]["secure_aggregation"] > 0 for r in rounds)
    for deployed, in_process in zip(rounds, reference.records):
        assert set(deployed["privacy"]) == set(SITES)
        for site in SITES:
            assert deployed["privacy"][site]["epsilon"] == pytest.approx(in_process.privacy[site]["epsilon"])
            assert 0 < deployed["privacy"][site]["epsilon"] <= deployed["privacy"][site]["epsilon_budget"] == 5.0
    deployed_model = load_file(str(deployment.run_dir / "model.safetensors"))
    for key, value in module.model.state_dict().items():
        torch.testing.assert_close(deployed_model[key], value, rtol=0, atol=1e-5)
