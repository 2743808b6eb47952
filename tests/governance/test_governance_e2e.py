"""The whole governance chain on a real (tiny) federation: ledger -> registry -> rollback -> dashboard.

The loop below does what the engine does each round (train the sites, aggregate
with FedAvg, validate the candidate at every site, hand the RoundRecord to the
observers, commit unless refused), so the observers see real updates and real
models. Site d skips rounds 1 and 2; in round 3 it attacks, sending site a's
delta times -30 (a sign-flipping attacker need not train).
"""
import runpy
from dataclasses import replace

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from support import ROOT, tiny_module, tiny_site

from federation.evaluation import evaluate
from federation.governance import SiteEvaluator, build_observers, finish, round_findings
from federation.governance.layout import DEFAULT_CONFIG
from federation.governance.ledger import FEEDBACK, ROLLBACK, ROUND, RUN_START, read_ledger
from federation.governance.registry import Registry
from federation.outputs import write_model
from federation.round_record import ACCEPTED, ROUND_ACCEPTED, ROUND_REJECTED, SKIPPED, RoundRecord, SiteOutcome
from federation.state import get_state, set_state, trainable_keys
from federation.strategies.fedavg import FedAvg
from modalities.site_data import SiteData

rollback_script = runpy.run_path(str(ROOT / "scripts" / "rollback.py"))["main"]
verify_script = runpy.run_path(str(ROOT / "scripts" / "verify_ledger.py"))["main"]
LIMITS = {"max_epochs": 1}
LABELS = ["OMIM:0", "OMIM:1", "OMIM:2"]
CODES = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0]])  # the labs each diagnosis shows


def _items(name: str, n: int, seed: int) -> list[dict]:
    """Labs that carry the diagnosis (so the model can learn it), with sex and age for the subgroup monitor."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        label = i % 3
        labs = torch.cat([CODES[label] + 0.3 * torch.randn(2, generator=g), torch.zeros(2)])
        meta = {"sex": "FEMALE" if i % 2 else "MALE", "age_years": 8.0 if i % 4 < 2 else 45.0}
        items.append({"patient_id": f"{name}{i}", "label": label, "inputs": {"labs": labs}, "meta": meta})
    return items


def _sites():
    sites = []
    for k, name in enumerate(("a", "b", "c", "d")):
        site = tiny_site(name, 6, False, seed=k)
        site.data = SiteData(name, ("labs",), {"train": _items(name, 12, seed=10 + k), "val": _items(name, 6, seed=20 + k)})
        site.name = name
        sites.append(site)
    return sites


def _governance():
    cfg = OmegaConf.load(DEFAULT_CONFIG)
    cfg.sites = None
    cfg.participation.min_sites = 3
    cfg.monitoring.contribution = True
    cfg.monitoring.min_count = 3
    return cfg


def _round(round_, sites, module, strategy, state, observers, cfg, evaluator, attacker=None) -> RoundRecord:
    trained = sites[:-1]  # d, the last site, only ever attacks
    updates = [site.train(module, state, LIMITS, round_, seed=100 * round_ + i) for i, site in enumerate(trained)]
    if attacker:
        updates.append(replace(updates[0], site=attacker, deltas={k: -30 * v for k, v in updates[0].deltas.items()}))
    candidate = strategy.aggregate(state, updates)
    set_state(module, candidate)
    sent = {u.site: u for u in updates}
    outcomes = []
    for site in sites:
        update = sent.get(site.name)
        outcome = SiteOutcome(site.name, ACCEPTED, n_samples=update.n_samples, update_norm=update.norm()) if update else SiteOutcome(site.name, SKIPPED, "not sampled")
        outcome.val_metrics = evaluate(module.model, site.loader("val"))
        outcomes.append(outcome)
    record = RoundRecord(round_, outcomes, state, candidate)
    record.extra |= round_findings(cfg, updates, strategy, state, evaluator.mean_metric)
    for observer in observers:
        observer.on_round(record)
    set_state(module, record.global_state if record.decision == ROUND_ACCEPTED else record.previous_state)
    return record


def test_ledger_registry_rollback_and_dashboard_on_a_real_federation(tmp_path):
    # Prepare
    module, sites, cfg = tiny_module(), _sites(), _governance()
    consortium = type("Consortium", (), {"sites": [s.data for s in sites], "quality": {}})()
    evaluator = SiteEvaluator(module, sites)
    observers = build_observers(cfg, tmp_path, consortium, LABELS, evaluator=evaluator)
    state = get_state(module, trainable_keys(module))

    # Execute: two honest rounds, then a poisoned one
    records = []
    for round_, poisoned in ((1, None), (2, None), (3, "d")):
        records.append(_round(round_, sites, module, FedAvg(), state, observers, cfg, evaluator, poisoned))
        state = records[-1].global_state if records[-1].decision == ROUND_ACCEPTED else records[-1].previous_state
    write_model(tmp_path / "model.safetensors", {**state}, {"labels": str(LABELS).replace("'", '"')})
    status = rollback_script([f"run_dir={tmp_path}", "version=1", "reason=audit of round 2"])
    dashboard = finish(tmp_path, cfg)

    # Assert: decisions and findings
    assert [r.decision for r in records] == [ROUND_ACCEPTED, ROUND_ACCEPTED, ROUND_REJECTED]
    assert "promotion rule" in records[2].reason
    assert "norm_high" in records[2].extra["anomaly"]["flags"]["d"]
    contribution = records[2].extra["contribution"]
    assert min(contribution, key=contribution.get) == "d" and contribution["d"] < 0
    assert records[1].extra["subgroups"]["sex"]["FEMALE"]["n"] == 12
    # the ledger: start, feedback, three rounds, the rollback; and it verifies
    entries = read_ledger(tmp_path / "ledger.jsonl")
    assert [e["kind"] for e in entries] == [RUN_START, FEEDBACK, ROUND, ROUND, ROUND, ROLLBACK]
    assert entries[2]["data"]["participants"] == ["a", "b", "c"] and entries[2]["data"]["sites"]["d"]["status"] == SKIPPED
    assert entries[4]["data"]["participants"] == ["a", "b", "c", "d"]
    assert entries[4]["data"]["model"] == entries[3]["data"]["model"]  # the rejected round changed nothing
    assert verify_script([str(tmp_path / "ledger.jsonl")]) == 0
    # the registry: initial model + two accepted rounds; version 1 is the run's model again
    registry = Registry(tmp_path / "registry")
    assert registry.versions() == [0, 1, 2] and registry.current() == 1 and status == 0
    assert registry.card(2)["ledger_entry"] == entries[3]["hash"]
    restored = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(restored[k], v) for k, v in registry.load(1).items())
    # the dashboard exists and says what happened
    page = dashboard.read_text()
    assert "Ledger verified: 6 entries" in page and "promotion rule" in page and "version 1 restored" in page
