"""Governance in the deployment: one governed consortium, run in process and over Flower, writes the same ledger.

The deployment is the real ServerApp over tests/deployment/test_flower.py's InProcessGrid (the
real ClientApp behind every node, in this process); the in-process run is the engine
with the experiment's governance hooks. The ledgers must agree entry by entry, apart
from times, hashes of the chain, what only the transport knows (bytes, phase times)
and the findings a coordinator cannot compute, which its entries name with the reason.
"""
from __future__ import annotations

import logging
import runpy
from functools import partial
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict
from hydra.utils import instantiate
from test_flower import InProcessGrid, consortium_overrides, nodes_for, write_table_consortium

from federation.engine import InProcessEngine
from federation.flower import server_app
from federation.flower.builder import build_module, build_strategy
from federation.flower.config import compose_config, join_overrides
from federation.flower.plan import consortium_plan
from federation.governance import finish
from federation.governance.ledger import FEEDBACK, ROUND, RUN_START, read_ledger
from federation.governance.registry import Registry
from federation.governance.run_hooks import UNAVAILABLE, governance_hooks
from federation.round_loop import NOT_A_MEMBER
from federation.round_record import ROUND_FAILED
from federation.site import Site
from federation.training_env import local_limits, use_threads
from modalities.consortium import load_consortium
from modalities.dataset import collate_batch

ROOT = Path(__file__).resolve().parents[2]
verify_ledger = runpy.run_path(str(ROOT / "scripts" / "verify_ledger.py"))["main"]
TRANSPORT = {"flower", "unavailable"}
"""Findings only the deployment records: what moved over Flower, and which findings it could not compute."""


@pytest.fixture(scope="module")
def table_root(tmp_path_factory) -> Path:
    return write_table_consortium(tmp_path_factory.mktemp("tables"))


def governed_overrides(root: Path) -> list[str]:
    """An agreement under which east joins in round 2 and every round needs all three members: round 1 is refused
    after aggregation (FedAdam's moments rolled back), rounds 2 and 3 go to the promotion rule."""
    agreement = ["governance=open", "governance.participation.min_sites=3", "governance.sites=[{name: north}, {name: south}, {name: east, joined_round: 2}]"]
    return consortium_overrides(root, rounds=3, strategy="fedadam") + agreement


def run_in_process(overrides: list[str], run_dir: Path) -> None:
    """As the experiment runs a governed federation (federation/driver/experiment.py), without baselines and reports."""
    cfg = compose_config("train", overrides)
    use_threads(cfg.get("torch_threads"))
    consortium = load_consortium(cfg.data, seed=cfg.seed)
    module = build_module(cfg, consortium_plan(cfg.data))
    collate = partial(collate_batch, modalities=module.model.modalities, readers=consortium.readers)
    sites = [Site(data, collate, cfg.data.batch_size, instantiate(cfg.trainer)) for data in consortium.sites]
    strategy, participation, validator = build_strategy(cfg)
    hooks = governance_hooks(cfg, run_dir, consortium, module, sites, "cpu")
    InProcessEngine(sites, module, strategy, cfg.federation.rounds, local_limits(cfg.federation), cfg.seed,
                    participation=participation, validator=validator, **hooks).run(progress=False)
    finish(run_dir, cfg.governance)


def run_deployed(overrides: list[str], run_dir: Path, coordinator: tuple[str, ...] = ()) -> None:
    """The ServerApp's main, as the SuperLink starts it, over a grid that delivers every message in this process.

    `coordinator`: more overrides for the coordinator alone."""
    own = ["deploy.rounds.wait_for_all_s=0", "deploy.rounds.wait_for_min_s=0", "deploy.rounds.reply_timeout_s=0",
           "deploy.auth.enabled=false", f"deploy.run_dir={run_dir}", "deploy.governance=true", *coordinator]
    run_config = {"consortium": join_overrides(overrides), "coordinator": join_overrides(own)}
    logger, handlers = logging.getLogger("federation"), list(logging.getLogger("federation").handlers)
    try:
        server_app.main(InProcessGrid(nodes_for(overrides)), Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    finally:
        logger.handlers = handlers  # the ServerApp logs to its run folder; not to this test's after it


@pytest.mark.slow
def test_a_governed_deployment_writes_the_in_process_ledger(table_root, tmp_path):
    overrides = governed_overrides(table_root)
    run_in_process(overrides, tmp_path / "in_process")

    run_deployed(overrides, tmp_path / "deployed")

    ours, theirs = read_ledger(tmp_path / "deployed" / "ledger.jsonl"), read_ledger(tmp_path / "in_process" / "ledger.jsonl")
    assert [e["kind"] for e in ours] == [e["kind"] for e in theirs] == [RUN_START, FEEDBACK, ROUND, ROUND, ROUND]
    assert ours[0]["data"] == theirs[0]["data"]  # members, rules, labels, the initial model
    assert "not reported" in ours[1]["data"]["note"] and ours[1]["data"]["sites"] == {}  # feedback files stay at the sites
    for deployed, in_process in zip(ours[2:], theirs[2:]):
        assert_same_round(deployed["data"], in_process["data"])
    first = ours[2]["data"]
    assert first["decision"] == ROUND_FAILED and "fewer than the agreed minimum of 3" in first["reason"]
    assert first["sites"]["east"]["reason"] == NOT_A_MEMBER and first["model"] == first["previous_model"] != first["candidate_model"]
    assert verify_ledger([str(tmp_path / "deployed" / "ledger.jsonl")]) == 0
    assert Registry(tmp_path / "deployed" / "registry").versions() == Registry(tmp_path / "in_process" / "registry").versions()
    assert "Ledger verified: 5 entries" in (tmp_path / "deployed" / "dashboard.html").read_text()


def assert_same_round(deployed: dict, in_process: dict) -> None:
    """Every field of the round's entry equal; findings equal where both runtimes compute them."""
    assert {k: v for k, v in deployed.items() if k != "findings"} == {k: v for k, v in in_process.items() if k != "findings"}
    ours, theirs = deployed["findings"], in_process["findings"]
    assert set(ours) - set(theirs) == TRANSPORT
    assert set(theirs) - set(ours) <= set(ours["unavailable"]) == set(UNAVAILABLE)
    assert {k: ours[k] for k in theirs if k in ours} == {k: v for k, v in theirs.items() if k in ours}
    assert set(ours["anomaly"]["flags"]) <= set(deployed["participants"])  # computed from the updates the coordinator saw
