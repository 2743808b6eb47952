"""The Flower deployment's logic without processes: records, plan, the round loop over a grid that
delivers every message to the real ClientApp in this process, faults, checkpoint and resume.

The slow tests (test_flower_deployment.py) run the same code as real SuperLink and
SuperNode processes; these check what could go wrong in it, quickly.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity
from hydra.utils import instantiate

from federation.engine import InProcessEngine
from federation.flower import builder, client_app, site_cache, timing
from federation.flower import deployment as flower
from federation.flower.builder import build_module, build_strategy
from federation.flower.config import (
    compose_config,
    join_overrides,
    node_config_string,
    site_config,
)
from federation.flower.coordinator import Coordinator
from federation.flower.egress import check_reply
from federation.flower.link import SiteLink
from federation.flower.plan import consortium_plan, own_site_data
from federation.flower.records import (
    DELTAS,
    META,
    MalformedMessage,
    update_from_content,
    update_to_content,
)
from federation.flower.run_folder import RunFolder
from federation.flower.secagg import ADVERT, MESSAGE_TYPES, ROSTER
from federation.flower.site_cache import SiteCache
from federation.privacy.egress import EgressViolation
from federation.privacy.hooks import make_sites_private, wrap_strategy
from federation.round_record import ACCEPTED, FAILED, REJECTED, ROUND_FAILED, SKIPPED
from federation.site import Site
from federation.state import get_state, trainable_keys
from federation.training_env import local_limits, use_threads
from federation.update import ModelUpdate
from modalities.consortium import load_consortium
from modalities.dataset import collate_batch

ROOT = Path(__file__).resolve().parents[2]
SITES = ("north", "south", "east")
COLUMNS = 14  # UCI heart disease: 13 inputs and `num`


# ---------------------------------------------------------------- a tiny tabular consortium

def write_table_consortium(root: Path, sites=SITES, rows: int = 48, seed: int = 0) -> Path:
    """Heart-disease-format files (one per site) whose label follows a noisy linear rule: easy to learn, quick to train."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for shift, site in enumerate(sites):
        lines = []
        for _ in range(rows):
            age, exang, oldpeak = rng.uniform(30, 75) + 3 * shift, rng.integers(0, 2), rng.uniform(0, 4)
            thalach, cp = rng.uniform(90, 200), rng.integers(1, 5)
            z = 0.08 * (age - 55) + 1.5 * exang + 0.9 * oldpeak - 0.04 * (thalach - 145) + 1.5 * (cp == 4) - 1.8 + rng.normal(0, 0.3)
            values = [age, rng.integers(0, 2), cp, rng.uniform(100, 180), rng.uniform(150, 350), rng.integers(0, 2),
                      rng.integers(0, 3), thalach, exang, oldpeak]
            lines.append(",".join(f"{float(v):.1f}" for v in values) + ",?,?,?," + str(int(z > 0)))
        (root / f"{site}.data").write_text("\n".join(lines) + "\n")
    return root


def consortium_overrides(root: Path, rounds: int = 2, strategy: str = "fedavg", sites=SITES, privacy: str = "none") -> list[str]:
    """Hydra overrides for the tiny consortium: FLamby's heart pipeline, a logistic regression, a few local steps."""
    entries = ",".join(f"{{name: {s}, path: {s}.data}}" for s in sites)
    return [
        "data=heart", "model=tabular_lr", f"federation={strategy}", f"data.root={root}", f"data.sites=[{entries}]",
        f"federation.rounds={rounds}", "federation.local_steps=8", "model.optimizer.lr=0.05", "data.batch_size=8", "seed=3",
        "data.split.method=draw", "+data.split.fractions={train: 0.6, val: 0.2, test: 0.2}", f"privacy={privacy}",
        "torch_threads=1",  # the same float sums in the in-process reference and at every site, whatever the load
    ]


@pytest.fixture(scope="module")
def table_root(tmp_path_factory) -> Path:
    return write_table_consortium(tmp_path_factory.mktemp("tables"))


# ---------------------------------------------------------------- a grid that delivers in this process

class InProcessGrid(Grid):
    """Delivers each message to a node's handler at once (the real ClientApp unless a test replaces it)."""

    def __init__(self, nodes: dict[int, Callable[[Message], Message | None]]):
        # what a ServerApp process is told by its SuperLink: messages are stamped with it
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
        self.nodes = nodes
        self.sent: list[Message] = []
        self.replies: list[Message] = []
        self.waiting: list[Message] = []
        self._ids = itertools.count()

    def set_run(self, run) -> None:  # pragma: no cover - not used here
        pass

    @property
    def run(self):  # pragma: no cover
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # pragma: no cover
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self):
        return list(self.nodes)

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = f"m{next(self._ids)}"
            self.sent.append(message)
            ids.append(message.metadata.message_id)
            reply = self.nodes[message.metadata.dst_node_id](message)
            if reply is not None:
                self.replies.append(reply)
                self.waiting.append(reply)
        return ids

    def send_and_receive(self, messages, *, timeout=None):  # pragma: no cover
        raise AssertionError("the coordinator collects replies with push_messages and pull_messages (its own poll interval)")

    def pull_messages(self, message_ids):
        """The replies to these messages that have not been pulled yet (as the SuperLink hands each out once)."""
        wanted = set(message_ids)
        pulled = [r for r in self.waiting if r.metadata.reply_to_message_id in wanted]
        self.waiting = [r for r in self.waiting if r not in pulled]
        return pulled


def client_node(
    node_id: int, site: str, consortium: list[str], data_path: str | None = None, budget_file: Path | None = None, restarts: bool = False,
    state_dir: Path | None = None,
) -> Callable[[Message], Message]:
    """The real ClientApp behind one node, with this node's config and its own run state, as a SuperNode would keep it.

    `budget_file`: where the site keeps its DP-SGD accountant (in `state_dir` by default);
    `restarts`: the SuperNode restarts before every message, so its run state is empty each time;
    `state_dir`: the node's own folder (a fresh temporary one by default): its site cache and timing log.
    """
    run_config = {"consortium": join_overrides(consortium), "coordinator": ""}
    state_dir = state_dir or Path(tempfile.mkdtemp())
    budget_file = budget_file or state_dir / "privacy_budget.json"
    own = [f"deploy.budget_file={budget_file}", f"deploy.site_cache.dir={state_dir / 'cache'}"]
    node_config = {"site": site, "data": data_path or "", "overrides": join_overrides(own), "timing": str(state_dir / "timing.jsonl")}

    def context() -> Context:
        return Context(run_id=1, node_id=node_id, node_config=node_config, state=RecordDict(), run_config=run_config)

    kept = context()
    return lambda message: client_app.app(message, context() if restarts else kept)


def coordinator(overrides: list[str], grid: Grid, run_dir: Path) -> Coordinator:
    """The coordinator over `grid`; no waiting: the in-process grid has every reply there is as soon as it is pushed."""
    timeouts = ["deploy.rounds.wait_for_all_s=0", "deploy.rounds.wait_for_min_s=0", "deploy.rounds.reply_timeout_s=0", f"deploy.run_dir={run_dir}"]
    cfg = compose_config("deploy/coordinator", overrides + timeouts)
    link = SiteLink(grid, consortium_plan(cfg.data), identify_timeout_s=0, ttl_s=60, journal=run_dir / "messages.jsonl")
    return Coordinator(cfg, link, RunFolder(run_dir))


def in_process_run(overrides: list[str]):
    """The in-process engine on the same config and seed (and privacy): the reference the deployment must match."""
    cfg = compose_config("train", overrides)
    use_threads(cfg.get("torch_threads"))  # as the run and every SiteNode do: the same float sums on both sides
    plan = consortium_plan(cfg.data)
    consortium = load_consortium(cfg.data, seed=cfg.seed)
    module = build_module(cfg, plan)
    collate = partial(collate_batch, modalities=module.model.modalities, readers=consortium.readers)
    sites = [Site(data, collate, cfg.data.batch_size, instantiate(cfg.trainer)) for data in consortium.sites]
    strategy, participation, validator = build_strategy(cfg)
    make_sites_private(cfg.get("privacy"), sites, local_limits(cfg.federation), cfg.federation.rounds)
    engine = InProcessEngine(sites, module, wrap_strategy(strategy, cfg.get("privacy"), cfg.federation.rounds), cfg.federation.rounds,
                             local_limits(cfg.federation), cfg.seed, participation=participation, validator=validator)
    return engine.run(progress=False), sites, module


def nodes_for(overrides: list[str], sites=SITES) -> dict[int, Callable]:
    return {100 + i: client_node(100 + i, site, overrides) for i, site in enumerate(sites)}


# ---------------------------------------------------------------- records and plan

def _update(**changes) -> ModelUpdate:
    fields = {"site": "north", "round": 2, "deltas": {"w": torch.ones(2, 3)}, "sample_counts": {"w": 5}, "n_samples": 5,
              "metrics": {"train_loss": 0.4}} | changes
    return ModelUpdate(**fields)


def test_an_update_survives_the_trip_as_records():
    update = _update(deltas={"encoders.imaging.w": torch.randn(2, 3), "head.b": torch.randn(4)},
                     sample_counts={"encoders.imaging.w": 3, "head.b": 5})

    back = update_from_content(update_to_content(update), expected_round=2)

    assert back.site == "north" and back.n_samples == 5 and back.sample_counts == update.sample_counts
    assert all(torch.equal(back.deltas[k], update.deltas[k]) for k in update.deltas)
    assert back.metrics == pytest.approx({"train_loss": 0.4})


@pytest.mark.parametrize("damage, reason", [
    (lambda c: c.pop(META), "no ConfigRecord 'meta'"),
    (lambda c: c[META].__setitem__("round", 1), "answered for round 1, expected round 2"),
    (lambda c: c[META].__setitem__("n_samples", 0), "n_samples is 0"),
    (lambda c: c.__setitem__(DELTAS, ArrayRecord()), "name different parameters"),
])
def test_a_malformed_reply_is_refused_with_its_reason(damage, reason):
    content = update_to_content(_update())
    damage(content)

    with pytest.raises(MalformedMessage, match=reason):
        update_from_content(content, expected_round=2)


def test_plan_seeds_follow_the_in_process_rule(table_root):
    cfg = compose_config("train", consortium_overrides(table_root))

    plan = consortium_plan(cfg.data)

    assert plan.sites == SITES and plan.labels == ("0", "1") and plan.modalities == ("tabular",)
    assert [plan.seed(3, 2, s) for s in SITES] == [3 + 2000, 3 + 2001, 3 + 2002]


def test_a_site_reads_only_its_own_file(table_root, tmp_path):
    moved = tmp_path / "elsewhere.data"
    moved.write_text((table_root / "south.data").read_text())
    cfg = compose_config("train", consortium_overrides(table_root))

    narrowed = own_site_data(cfg.data, "south", str(moved))

    assert [dict(s) for s in narrowed.sites] == [{"name": "south", "path": str(moved)}]
    assert [s.name for s in load_consortium(narrowed, seed=0).sites] == ["south"]


def test_the_coordinator_refuses_a_config_without_labels(table_root):
    cfg = compose_config("train", consortium_overrides(table_root) + ["data.labels=null"])

    with pytest.raises(ValueError, match="data.labels"):
        consortium_plan(cfg.data)


def test_node_config_round_trips_into_the_site_config(table_root):
    text = node_config_string("south", "/data/south.data", ["trainer.precision=32-true"])
    from flwr.common.config import parse_config_args

    node_config = parse_config_args([text])
    cfg = site_config({"consortium": join_overrides(consortium_overrides(table_root))}, node_config)

    assert (cfg.deploy.site, cfg.deploy.data_path, cfg.trainer.precision) == ("south", "/data/south.data", "32-true")


# ---------------------------------------------------------------- the round loop

def test_the_deployment_ends_where_the_in_process_engine_ends(table_root, tmp_path):
    overrides = consortium_overrides(table_root)
    reference, _, _ = in_process_run(overrides)

    state = coordinator(overrides, InProcessGrid(nodes_for(overrides)), tmp_path).run()

    assert state.round == 2 and set(state.global_state) == set(reference.global_state)
    for key, value in reference.global_state.items():
        torch.testing.assert_close(state.global_state[key], value, rtol=1e-5, atol=1e-6)
    deployed = {(r["round"], r["site"]): r for r in state.history}
    for row in reference.history:
        assert deployed[(row["round"], row["site"])]["val_accuracy"] == pytest.approx(row["val_accuracy"], nan_ok=True)
    for name in ("model.safetensors", "metrics.csv", "rounds.json", "final_metrics.json", "checkpoint.pt", "config.yaml"):
        assert (tmp_path / name).exists(), name


@pytest.mark.slow
def test_sites_with_different_modalities_end_where_the_in_process_engine_ends(tmp_path):
    """The smoke consortium: each site trains (and sends) only its modalities' parameters, so key sets differ."""
    # one torch thread in both runtimes: `auto` could pick different counts for the two runs, and the order of
    # float sums with them (the notes encoder amplifies it past 1e-5)
    base = ["experiment=smoke", f"paths.data_dir={tmp_path / 'data'}", "progress=false", "torch_threads=1"]
    labels = load_consortium(compose_config("train", base).data, seed=0).label_space.labels
    overrides = base + ["data.labels=[" + ",".join(f"'{label}'" for label in labels) + "]"]
    reference, sites, _ = in_process_run(overrides)
    grid = InProcessGrid({100 + i: client_node(100 + i, site.name, overrides) for i, site in enumerate(sites)})

    state = coordinator(overrides, grid, tmp_path / "run").run()

    trained = {r.content[META]["site"]: frozenset(r.content[DELTAS]) for r in grid.replies if r.metadata.message_type == "train"}
    assert len(set(trained.values())) == len(sites)  # every site sent its own set of parameters
    assert all(site["status"] == ACCEPTED for r in state.rounds for site in r["sites"].values())
    for key, value in reference.global_state.items():
        torch.testing.assert_close(state.global_state[key], value, rtol=1e-5, atol=1e-6)


def _replace_reply(handler, change: Callable[[Message], Message | None]):
    return lambda message: change(handler(message)) if message.metadata.message_type == "train" else handler(message)


def _wrong_round(reply: Message) -> Message:
    reply.content[META]["round"] = 99
    return reply


def _wrong_shape(reply: Message) -> Message:
    deltas = reply.content[DELTAS]
    key = next(iter(deltas))
    deltas[key] = Array(np.zeros((7, 7), np.float32))
    return reply


def _garbage(reply: Message) -> Message:
    return Message(RecordDict({"junk": ConfigRecord({"a": 1})}), reply_to=_request_of(reply))


_requests: dict[str, Message] = {}


def _request_of(reply: Message) -> Message:
    return _requests[reply.metadata.reply_to_message_id]


def _remember(handler):
    def wrapped(message):
        _requests[message.metadata.message_id] = message
        return handler(message)
    return wrapped


@pytest.mark.parametrize("fault, reason", [
    (_garbage, "no ConfigRecord 'meta'"),
    (_wrong_round, "answered for round 99, expected round 1"),
    (_wrong_shape, "has shape (7, 7)"),
])
@pytest.mark.slow
def test_a_bad_reply_is_rejected_and_the_round_goes_on(table_root, tmp_path, fault, reason):
    overrides = consortium_overrides(table_root, rounds=1)
    nodes = nodes_for(overrides)
    nodes[102] = _remember(_replace_reply(nodes[102], fault))

    state = coordinator(overrides, InProcessGrid(nodes), tmp_path).run()

    sites = state.rounds[0]["sites"]
    assert state.rounds[0]["decision"] == "accepted"
    assert [sites[s]["status"] for s in SITES] == [ACCEPTED, ACCEPTED, REJECTED]
    assert reason in sites["east"]["reason"]


def test_a_silent_site_fails_its_round_and_a_round_short_of_sites_fails(table_root, tmp_path):
    overrides = consortium_overrides(table_root, rounds=1) + ["federation.participation.min_sites=3"]
    nodes = nodes_for(overrides)
    nodes[101] = _replace_reply(nodes[101], lambda reply: None)
    run = coordinator(overrides, InProcessGrid(nodes), tmp_path)
    initial = get_state(run.module, trainable_keys(run.module))

    state = run.run()

    record = state.rounds[0]
    assert record["decision"] == ROUND_FAILED and "fewer than participation.min_sites=3" in record["reason"]
    assert record["sites"]["south"]["status"] == FAILED and "no reply" in record["sites"]["south"]["reason"]
    assert [record["sites"][s]["status"] for s in ("north", "east")] == [ACCEPTED, ACCEPTED]
    assert all(torch.equal(state.global_state[k], initial[k]) for k in initial)


def test_a_node_configured_for_another_consortium_is_refused(table_root, tmp_path):
    overrides = consortium_overrides(table_root, rounds=1)
    nodes = nodes_for(overrides, SITES[:2])
    nodes[102] = client_node(102, "east", overrides + ["data.labels=[no,yes]"])

    state = coordinator(overrides, InProcessGrid(nodes), tmp_path).run()

    sites = state.rounds[0]["sites"]
    assert [sites[s]["status"] for s in SITES] == [ACCEPTED, ACCEPTED, FAILED]
    assert sites["east"]["reason"].startswith("not connected (node 102 refused: site 'east' runs another consortium plan")


@pytest.mark.slow  # several DP-SGD or resumed runs in both runtimes
def test_a_resumed_coordinator_ends_where_an_uninterrupted_one_ends(table_root, tmp_path):
    overrides = consortium_overrides(table_root, rounds=2, strategy="fedadam")
    uninterrupted = coordinator(overrides, InProcessGrid(nodes_for(overrides)), tmp_path / "whole").run()
    crashing = coordinator(overrides, InProcessGrid(nodes_for(overrides)), tmp_path / "resumed")
    crashing.rounds = 1  # the first process dies after round 1's checkpoint
    crashing.run()

    resumed = coordinator(overrides, InProcessGrid(nodes_for(overrides)), tmp_path / "resumed").run()

    assert [r["round"] for r in resumed.rounds] == [1, 2]
    for key, value in uninterrupted.global_state.items():
        torch.testing.assert_close(resumed.global_state[key], value, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_a_checkpoint_of_another_config_is_not_resumed(table_root, tmp_path):
    overrides = consortium_overrides(table_root, rounds=1)
    coordinator(overrides, InProcessGrid(nodes_for(overrides)), tmp_path).run()

    with pytest.raises(ValueError, match="another consortium or config"):
        coordinator(overrides + ["seed=4"], InProcessGrid(nodes_for(overrides + ["seed=4"])), tmp_path).run()


# ---------------------------------------------------------------- certificates and what a site is told

def test_certificates_name_the_coordinator_and_sites_get_p384_keys(tmp_path):
    from federation.flower.loopback import make_certificates

    make_certificates(tmp_path, "coordinator.example.org", ["north", "south"])

    san = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "server.pem"), "-noout", "-ext", "subjectAltName"],
                         capture_output=True, text=True, check=True).stdout
    assert "DNS:coordinator.example.org" in san and "IP Address:127.0.0.1" in san
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "server.pem")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    for site in ("north", "south"):
        fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "sites" / f"{site}.pub")],
                                     capture_output=True, text=True, check=True).stdout
        assert fingerprint.startswith("384 ") and "(ECDSA)" in fingerprint
        assert (tmp_path / "sites" / site).stat().st_mode & 0o077 == 0  # the private key is the site's alone


def test_certificates_are_kept_when_sites_are_added(tmp_path):
    from federation.flower.loopback import make_certificates

    make_certificates(tmp_path, "127.0.0.1", ["north"])
    ca, key = (tmp_path / "ca.crt").read_bytes(), (tmp_path / "sites" / "north").read_bytes()

    make_certificates(tmp_path, "127.0.0.1", ["north", "south"])

    assert (tmp_path / "ca.crt").read_bytes() == ca and (tmp_path / "sites" / "north").read_bytes() == key
    assert (tmp_path / "sites" / "south.pub").exists()


@pytest.mark.parametrize("line, says", [
    ("WARNING :   Connection attempt failed, retrying in 0.98 seconds", "not reachable yet; retrying with backoff (giving up after 60s"),
    ("[code: 2004] Failed to activate SuperNode.", "refused this site's key"),
    ("ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED]", "not signed by"),
])
def test_a_site_is_told_what_it_waits_for(line, says, table_root):
    from federation.flower.launch import explain

    cfg = compose_config("deploy/site", consortium_overrides(table_root) + ["deploy.site=north", "deploy.retry.max_wait_time_s=60"])

    assert says in explain(line, cfg.deploy)
    assert explain("INFO :      Received successfully", cfg.deploy) is None


def test_simulated_nodes_are_the_consortium_sites_in_order(table_root):
    run_config = {"consortium": join_overrides(consortium_overrides(table_root))}

    names = [site_config(run_config, {"partition-id": i, "num-partitions": 3}).deploy.site for i in range(3)]

    assert names == list(SITES)


# ---------------------------------------------------------------- secure aggregation and privacy over messages

def _silent_at(handler, message_type: str):
    """A node that stops answering from one kind of message on (a site gone between two steps)."""
    return lambda message: None if message.metadata.message_type == message_type else handler(message)


def assert_close_states(actual, expected, atol=1e-5) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=0, atol=atol)


@pytest.mark.slow
def test_secure_aggregation_over_messages_ends_where_plain_fedavg_ends(table_root, tmp_path):
    reference, _, _ = in_process_run(consortium_overrides(table_root, strategy="fedavg"))
    overrides = consortium_overrides(table_root, strategy="secure_fedavg")
    grid = InProcessGrid(nodes_for(overrides))

    state = coordinator(overrides, grid, tmp_path).run()

    assert_close_states(state.global_state, reference.global_state)  # to the fixed-point precision (2^-20)
    train_replies = [r for r in grid.replies if r.metadata.message_type == "train"]
    assert train_replies and all(DELTAS not in r.content and ADVERT in r.content for r in train_replies)  # updates stay at the sites
    assert {m.metadata.message_type for m in grid.sent} >= set(MESSAGE_TYPES.values())
    assert all(site["status"] == ACCEPTED for r in state.rounds for site in r["sites"].values())


@pytest.mark.slow
@pytest.mark.parametrize("step", ["mask", "unmask"])
def test_a_site_gone_between_steps_is_recovered_from_the_shares(table_root, tmp_path, step):
    fedavg = consortium_overrides(table_root, rounds=1, strategy="fedavg")
    plain = nodes_for(fedavg)
    plain[102] = _silent_at(plain[102], "train")  # the plain mean of north and south
    expected = coordinator(fedavg, InProcessGrid(plain), tmp_path / "plain").run()
    overrides = consortium_overrides(table_root, rounds=1, strategy="secure_fedavg")
    nodes = nodes_for(overrides)
    nodes[102] = _silent_at(nodes[102], MESSAGE_TYPES[step])  # east trained and shared its keys, then went silent

    state = coordinator(overrides, InProcessGrid(nodes), tmp_path / "secure").run()

    record = state.rounds[0]
    assert record["decision"] == "accepted"
    if step == "mask":  # its pairwise masks are rebuilt from its key shares; its update is not in the sum
        assert_close_states(state.global_state, expected.global_state)
        assert record["sites"]["east"]["status"] == FAILED and "at the 'mask' step" in record["sites"]["east"]["reason"]
    else:  # its masked input is in the sum; the others' shares suffice to unmask
        reference, _, _ = in_process_run(fedavg)
        assert_close_states(state.global_state, reference.global_state)
        assert record["sites"]["east"]["status"] == ACCEPTED and "did not answer the unmasking step" in record["sites"]["east"]["reason"]


@pytest.mark.slow
def test_more_dropouts_than_tolerated_fail_the_round_loudly(table_root, tmp_path):
    overrides = consortium_overrides(table_root, rounds=1, strategy="secure_fedavg")
    nodes = nodes_for(overrides)
    for node in (101, 102):
        nodes[node] = _silent_at(nodes[node], MESSAGE_TYPES["mask"])
    run = coordinator(overrides, InProcessGrid(nodes), tmp_path)
    initial = get_state(run.module, trainable_keys(run.module))

    state = run.run()

    record = state.rounds[0]
    assert record["decision"] == ROUND_FAILED
    assert "at the 'mask' step: only 1 of 3 sites sent masked inputs" in record["reason"] and "at most n - t = 1 dropouts" in record["reason"]
    assert all(torch.equal(state.global_state[k], initial[k]) for k in initial)


@pytest.mark.slow  # several DP-SGD or resumed runs in both runtimes
def test_dp_sgd_sites_spend_as_in_process_and_report_epsilon_each_round(table_root, tmp_path):
    # Opacus's per-sample hooks: the logistic regression allows them, and they are quicker than microbatches
    overrides = consortium_overrides(table_root, privacy="dp_sgd") + ["privacy.epsilon=5.0", "privacy.delta=1e-2", "privacy.per_sample_grads=opacus"]
    reference, _, _ = in_process_run(overrides)

    state = coordinator(overrides, InProcessGrid(nodes_for(overrides)), tmp_path).run()

    assert_close_states(state.global_state, reference.global_state, atol=1e-6)
    for deployed, in_process in zip(state.rounds, reference.records):
        assert set(deployed["privacy"]) == set(SITES)
        for site in SITES:
            assert deployed["privacy"][site]["epsilon"] == pytest.approx(in_process.privacy[site]["epsilon"])
            assert deployed["privacy"][site]["epsilon_budget"] == 5.0
    assert all(0 < r["privacy"]["north"]["epsilon"] <= 5.0 for r in state.rounds)
    assert state.rounds[0]["privacy"]["north"]["epsilon"] < state.rounds[1]["privacy"]["north"]["epsilon"]


@pytest.mark.slow
def test_a_dp_sgd_site_out_of_budget_declines_and_says_why(table_root, tmp_path):
    # a fixed noise so that one round fits a budget of 2 and two do not (epsilon about 1.7, then 2.4, at these sites)
    overrides = consortium_overrides(table_root, privacy="dp_sgd") + ["privacy.epsilon=2.0", "privacy.delta=1e-2", "privacy.noise_multiplier=1.5"]

    state = coordinator(overrides, InProcessGrid(nodes_for(overrides)), tmp_path).run()

    first, second = state.rounds
    assert all(first["sites"][s]["status"] == ACCEPTED for s in SITES)
    assert all(second["sites"][s]["status"] == SKIPPED and "stops contributing" in second["sites"][s]["reason"] for s in SITES)
    assert second["privacy"] == first["privacy"]  # nothing more was spent


@pytest.mark.slow
def test_a_restarted_dp_sgd_site_resumes_its_budget_from_its_own_disk(table_root, tmp_path):
    # as in the test above (one round fits the budget, two do not), but every SuperNode restarts before each message
    overrides = consortium_overrides(table_root, privacy="dp_sgd") + ["privacy.epsilon=2.0", "privacy.delta=1e-2", "privacy.noise_multiplier=1.5"]
    nodes = {100 + i: client_node(100 + i, site, overrides, budget_file=tmp_path / site / "budget.json", restarts=True)
             for i, site in enumerate(SITES)}

    state = coordinator(overrides, InProcessGrid(nodes), tmp_path / "run").run()

    first, second = state.rounds
    assert all(first["sites"][s]["status"] == ACCEPTED for s in SITES)
    assert all(second["sites"][s]["status"] == SKIPPED and "stops contributing" in second["sites"][s]["reason"] for s in SITES)
    saved = json.loads((tmp_path / SITES[0] / "budget.json").read_text())
    assert list(saved) == ["1"]  # per Flower run


def test_a_damaged_budget_file_stops_the_site_naming_the_file(table_root, tmp_path):
    overrides = consortium_overrides(table_root, rounds=1, privacy="dp_sgd") + ["privacy.epsilon=2.0", "privacy.delta=1e-2"]
    damaged = tmp_path / "north_budget.json"
    damaged.write_text("{not json")
    nodes = {100 + i: client_node(100 + i, site, overrides, budget_file=damaged if site == "north" else None, restarts=True)
             for i, site in enumerate(SITES)}

    # in a deployment Flower returns the exception to the coordinator as the site's error reply
    with pytest.raises(ValueError, match=f"{re.escape(str(damaged))}: the site's privacy budget file is not valid JSON"):
        coordinator(overrides, InProcessGrid(nodes), tmp_path / "run").run()
    assert damaged.read_text() == "{not json"  # nothing written over it


@pytest.mark.slow
def test_site_level_dp_over_secure_aggregation_matches_the_in_process_engine(table_root, tmp_path):
    overrides = consortium_overrides(table_root, strategy="secure_fedavg", privacy="site_dp") + ["privacy.epsilon=8.0", "privacy.clip_norm=0.5"]
    reference, _, _ = in_process_run(overrides)

    state = coordinator(overrides, InProcessGrid(nodes_for(overrides)), tmp_path).run()

    assert_close_states(state.global_state, reference.global_state)  # same clip, unit weights, and the coordinator's seeded noise
    for deployed, in_process in zip(state.rounds, reference.records):
        assert set(deployed["privacy"]) == set(in_process.privacy) == set(SITES)
        assert all(deployed["privacy"][s] == pytest.approx(in_process.privacy[s]) for s in SITES)


@pytest.mark.slow
def test_a_site_over_its_site_level_budget_is_not_asked_to_train(table_root, tmp_path):
    # noise multiplier 2, every site each round: epsilon about 1.6 after one round, 2.3 after two
    overrides = consortium_overrides(table_root, privacy="site_dp") + ["privacy.epsilon=2.0", "privacy.noise_multiplier=2.0"]
    grid = InProcessGrid(nodes_for(overrides))

    state = coordinator(overrides, grid, tmp_path).run()

    first, second = state.rounds
    assert all(first["sites"][s]["status"] == ACCEPTED for s in SITES)
    assert all(second["sites"][s]["status"] == SKIPPED and "stops contributing" in second["sites"][s]["reason"] for s in SITES)
    assert second["decision"] == ROUND_FAILED and second["privacy"] == first["privacy"]
    assert sum(m.metadata.message_type == "train" for m in grid.sent) == len(SITES)  # round 2 asked nobody


def _replies_of_north(table_root, tmp_path) -> dict[str, tuple[Message, Message]]:
    """One genuine (request, reply) per message type a site answers, from a real round with secure aggregation."""
    overrides = consortium_overrides(table_root, rounds=1, strategy="secure_fedavg")
    node = client_node(100, "north", overrides)
    exchanged = {}

    def north(message):
        reply = node(message)
        exchanged[message.metadata.message_type] = (message, reply)
        return reply

    nodes = nodes_for(overrides)
    nodes[100] = north
    coordinator(overrides, InProcessGrid(nodes), tmp_path).run()
    return exchanged


def test_the_egress_check_refuses_anything_a_reply_should_not_carry(table_root, tmp_path):
    exchanged = _replies_of_north(table_root, tmp_path)
    assert set(exchanged) == {"query", "train", "evaluate", *MESSAGE_TYPES.values()}
    for kind, (request, reply) in exchanged.items():
        memory = RecordDict()
        if kind in MESSAGE_TYPES.values():  # measured against the roster the site accepted
            memory[ROSTER] = exchanged[MESSAGE_TYPES["share"]][0].content[ROSTER]
        check_reply(request, reply.content, memory)  # the genuine reply passes

        smuggled = RecordDict(dict(reply.content) | {"raw": ConfigRecord({"age": 61})})
        with pytest.raises(EgressViolation):
            check_reply(request, smuggled, memory)
    request, reply = exchanged["evaluate"]
    reply.content["metrics"]["val_patient_age"] = 61.0
    with pytest.raises(EgressViolation, match="allow-list"):
        check_reply(request, reply.content, RecordDict())


# ---------------------------------------------------------------- a round in seconds: the node cache, imports, polls, timing

def _site_cfg(table_root: Path, cache_dir: Path, *extra: str):
    node_config = {"site": "south", "overrides": join_overrides([f"deploy.site_cache.dir={cache_dir}", *extra])}
    return site_config({"consortium": join_overrides(consortium_overrides(table_root))}, node_config)


class CountingLoader:
    """load_consortium, counting the times the site's files are actually read and prepared."""

    def __init__(self, monkeypatch):
        self.calls = 0
        monkeypatch.setattr(builder, "load_consortium", self)

    def __call__(self, data, seed):
        self.calls += 1
        return load_consortium(data, seed=seed)


def _load(cfg) -> tuple[object, str]:
    timing.current = timing.MessageTimes("m", "train")
    consortium = builder.load_own_site(cfg, consortium_plan(cfg.data), SiteCache.from_config(cfg.deploy.site_cache))
    return consortium, timing.current.record["cache"]


def _same_data(a, b) -> bool:
    for name in ("train", "val", "test"):
        ours, theirs = a.sites[0].splits[name].items, b.sites[0].splits[name].items
        if len(ours) != len(theirs) or any(x["patient_id"] != y["patient_id"] or x["label"] != y["label"]
                                           or not torch.equal(x["inputs"]["tabular"], y["inputs"]["tabular"]) for x, y in zip(ours, theirs)):
            return False
    return True


def test_a_second_message_reads_the_prepared_data_from_the_node_cache(table_root, tmp_path, monkeypatch):
    loader, cfg = CountingLoader(monkeypatch), _site_cfg(table_root, tmp_path / "cache")

    first, source_1 = _load(cfg)
    second, source_2 = _load(cfg)

    assert (source_1, source_2, loader.calls) == ("miss", "hit", 1)
    assert _same_data(first, second) and second.label_space.labels == first.label_space.labels
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [p.name for p in (tmp_path / "cache").glob("*.pt")]  # no temp files left


def test_a_changed_data_file_or_data_config_invalidates_the_cache_and_other_settings_do_not(tmp_path, monkeypatch):
    root = write_table_consortium(tmp_path / "tables")
    loader = CountingLoader(monkeypatch)
    _load(_site_cfg(root, tmp_path / "cache"))

    _, other_settings = _load(_site_cfg(root, tmp_path / "cache", "federation.rounds=9", "model.optimizer.lr=0.5"))
    _, other_split = _load(_site_cfg(root, tmp_path / "cache", "data.split.fractions.train=0.5", "data.split.fractions.val=0.3"))
    with (root / "south.data").open("a") as handle:  # one more patient
        handle.write((root / "south.data").read_text().splitlines()[0] + "\n")
    changed, after_edit = _load(_site_cfg(root, tmp_path / "cache"))

    assert (other_settings, other_split, after_edit) == ("hit", "miss", "miss") and loader.calls == 3
    assert sum(len(s) for s in changed.sites[0].splits.values()) == 49


def test_a_damaged_cache_entry_is_ignored_and_rebuilt(table_root, tmp_path, monkeypatch):
    loader, cfg = CountingLoader(monkeypatch), _site_cfg(table_root, tmp_path / "cache")
    reference, _ = _load(cfg)
    (entry,) = (tmp_path / "cache").glob("*.pt")
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # e.g. a disk that filled up under another writer

    rebuilt, source = _load(cfg)
    _, then = _load(cfg)

    assert (source, then, loader.calls) == ("miss", "hit", 2) and _same_data(rebuilt, reference)


def test_a_crash_while_writing_leaves_no_cache_entry(table_root, tmp_path, monkeypatch):
    cfg = _site_cfg(table_root, tmp_path / "cache")

    def dies_half_way(payload, path):
        Path(path).write_bytes(b"PK\x03\x04 half an entry")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(site_cache.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        _load(cfg)
    monkeypatch.undo()

    assert list((tmp_path / "cache").iterdir()) == []
    assert _load(cfg)[1] == "miss"


def test_prepared_data_that_is_not_plain_tensors_is_not_cached(table_root, tmp_path):
    class Stateful:
        def __init__(self):
            self.vocabulary = {"a": 0}

    consortium = load_consortium(compose_config("train", consortium_overrides(table_root)).data, seed=0)
    consortium.readers = {"tabular": Stateful()}

    with pytest.raises(site_cache.NotCacheable, match="'tabular' reader .*vocabulary"):
        site_cache.to_payload(consortium, "key")


IMPORT_PROBE = """
import importlib.abc, json, sys, traceback
importers = {}

class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("monai", "transformers") and name not in importers:
            frames = [f.filename for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename and "<frozen" not in f.filename]
            importers[name] = frames[-1]
        return None

sys.meta_path.insert(0, Spy())
from flwr.app import Context, Message, MessageType, RecordDict
from federation.flower import client_app
from federation.flower.builder import build_module
from federation.flower.config import site_config
from federation.flower.plan import consortium_plan
from federation.flower.records import Instructions, instructions_content
from federation.state import get_state, trainable_keys
from flwr.supercore.task_identity import TaskIdentity

TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0  # as Flower stamps a ClientApp process
run_config, node_config = json.loads(sys.argv[1]), json.loads(sys.argv[2])
cfg = site_config(run_config, node_config)
plan = consortium_plan(cfg.data)
state = get_state(build_module(cfg, plan), trainable_keys(build_module(cfg, plan)))
errors = []
for kind, instructions in ((MessageType.TRAIN, Instructions(1, "north", plan.fingerprint, 1000, {"max_steps": 2, "max_epochs": -1})),
                           (MessageType.EVALUATE, Instructions(1, "north", plan.fingerprint, splits=["val"]))):
    message = Message(instructions_content(state, instructions), 0, kind)
    message.metadata.__dict__["_message_id"] = kind
    reply = client_app.app(message, Context(run_id=1, node_id=0, node_config=node_config, state=RecordDict(), run_config=run_config))
    errors += [reply.error.reason] if reply.has_error() else []
heavy = ["monai", "federation.driver.experiment", "federation.adaptation", "federation.governance"]
print(json.dumps({"errors": errors, "importers": importers, "loaded": [m for m in heavy if m in sys.modules]}))
"""


@pytest.mark.slow
def test_a_logistic_regression_site_imports_no_encoder_library_and_no_experiment_stack(table_root, tmp_path):
    """In a fresh interpreter, as Flower starts one per message: import the ClientApp, train and evaluate once."""
    run_config = {"consortium": join_overrides(consortium_overrides(table_root)), "coordinator": ""}
    node_config = {"site": "north", "overrides": join_overrides([f"deploy.site_cache.dir={tmp_path / 'cache'}",
                                                                 f"deploy.budget_file={tmp_path / 'budget.json'}"])}
    done = subprocess.run([sys.executable, "-c", IMPORT_PROBE, json.dumps(run_config), json.dumps(node_config)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])

    assert probe["errors"] == [] and probe["loaded"] == []
    assert "monai" not in probe["importers"]
    # transformers comes with torchmetrics (which Lightning imports) whenever it is installed; never through our code
    assert probe["importers"].get("transformers", "torchmetrics/functional/text/bert.py").endswith("torchmetrics/functional/text/bert.py")


@pytest.mark.slow
def test_the_site_timing_and_the_coordinator_journal_meet_by_message_id(table_root, tmp_path):
    overrides = consortium_overrides(table_root)
    nodes = {100 + i: client_node(100 + i, site, overrides, state_dir=tmp_path / site) for i, site in enumerate(SITES)}

    coordinator(overrides, InProcessGrid(nodes), tmp_path / "run").run()

    journal = {line["message_id"]: line for line in timing.read_lines(tmp_path / "run" / "messages.jsonl")}
    for site in SITES:
        lines = timing.read_lines(tmp_path / site / "timing.jsonl")
        assert [line["kind"] for line in lines] == ["query", "train", "evaluate", "train", "evaluate"]
        assert [line.get("cache") for line in lines] == [None, "miss", "hit", "hit", "hit"]
        for line in lines:
            sent = journal[line["message_id"]]
            assert sent["site"] in (site, None) and sent["sent"] <= line["handler_start"] <= line["reply_done"] <= sent["replied"]
            if line["kind"] in ("train", "evaluate"):
                marks = [line["handler_start"]] + [line[f"{phase}_done"] for phase in timing.PHASES] + [line["reply_done"]]
                assert marks == sorted(marks)


class LateGrid(InProcessGrid):
    """Hands a reply out only at the n-th pull that asks for it: a site slower than one poll interval."""

    def __init__(self, nodes, late_pulls: int):
        super().__init__(nodes)
        self.late_pulls, self.pulls = late_pulls, 0

    def pull_messages(self, message_ids):
        self.pulls += 1
        return super().pull_messages(message_ids) if self.pulls >= self.late_pulls else []


def test_the_coordinator_polls_for_replies_at_its_own_interval_until_they_come(table_root):
    overrides = consortium_overrides(table_root)
    grid = LateGrid(nodes_for(overrides), late_pulls=4)
    link = SiteLink(grid, consortium_plan(compose_config("train", overrides).data), identify_timeout_s=60, ttl_s=60, reply_poll_s=0.01)

    online = link.online()

    assert sorted(online) == sorted(SITES) and grid.pulls == 4


def test_the_superexec_poll_interval_reaches_flower_under_the_name_it_reads(monkeypatch):
    from flwr.supercore.superexec import run_superexec

    env = flower.flower_env("/tmp/home", 0.1)
    monkeypatch.setenv(flower.SUPEREXEC_POLL_ENV, env[flower.SUPEREXEC_POLL_ENV])

    assert run_superexec._get_task_poll_interval() == 0.1


def test_a_warm_executor_runs_each_task_in_a_forked_child_with_flowers_runtime(tmp_path, monkeypatch):
    from flwr.supercore.constant import TaskType
    from flwr.supercore.exit import exit_handler
    from flwr.supercore.superexec.executor.types import ExecutionSpec, LaunchResultStatus
    from flwr.supernode.runtime import run_clientapp as runtime

    from federation.flower import warm_exec

    def run_clientapp(**kwargs):  # what the child runs: Flower's ClientApp runtime, here a stand-in that reports
        (tmp_path / f"{kwargs['token']}.json").write_text(json.dumps({"kwargs": kwargs, "pid": os.getpid(),
                                                                      "handlers": len(exit_handler.registered_exit_handlers)}))
        sys.exit(0)

    monkeypatch.setattr(runtime, "run_clientapp", run_clientapp)
    exit_handler.add_exit_handler(lambda: None)  # the parent's: must not run in a child
    executor = warm_exec.ForkExecutor()
    spec = ExecutionSpec(TaskType.CLIENT_APP, "127.0.0.1:1", "token1", True, None, False, os.getpid(), False, 7)

    result = executor.launch(spec)
    (child,) = executor.children
    os.waitpid(child, 0)
    executor.reconcile()
    exit_handler.registered_exit_handlers.pop()

    ran = json.loads((tmp_path / "token1.json").read_text())
    assert result.status == LaunchResultStatus.ACCEPTED and ran["pid"] == child != os.getpid()
    assert ran["kwargs"]["runtime_api_address"] == "127.0.0.1:1" and ran["kwargs"]["insecure"] is True and ran["handlers"] == 0
    assert executor.children == set()


def test_the_warm_superexec_is_flowers_loop_with_the_fork_executor(monkeypatch):
    from flwr.supercore.superexec import run_superexec as superexec

    from federation.flower import warm_exec

    seen = {}
    monkeypatch.setattr(superexec, "run_superexec", lambda **kwargs: seen.update(kwargs, executor=superexec.get_executor("subprocess")))
    monkeypatch.setattr(superexec, "get_executor", superexec.get_executor)  # restored after the test

    warm_exec.main(["serve", "--runtime-api-address", "127.0.0.1:9", "--parent-pid", "1"])

    assert isinstance(seen["executor"], warm_exec.ForkExecutor)
    assert (seen["runtime_api_address"], seen["parent_pid"], seen["insecure"]) == ("127.0.0.1:9", 1, True)
    assert all(module in sys.modules for module in warm_exec.PRELOAD)
