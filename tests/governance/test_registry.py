"""Registry versions, the promotion rule, rollback and a leaving site's exit, driven by hand-made RoundRecords."""
import json
import math
import runpy

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from support import ROOT

from federation.governance.audit import LedgerWriter
from federation.governance.cards import RegistryWriter
from federation.governance.exit import exit_site, version_without
from federation.governance.hashing import model_hash
from federation.governance.layout import DEFAULT_CONFIG
from federation.governance.ledger import ROLLBACK, SITE_EXIT, Ledger, read_ledger
from federation.governance.promotion import PromotionGate, PromotionRule
from federation.governance.registry import Registry, RegistryError
from federation.governance.rollback import rollback
from federation.round_record import ACCEPTED, ROUND_ACCEPTED, ROUND_REJECTED, SKIPPED, RoundRecord, SiteOutcome

rollback_script = runpy.run_path(str(ROOT / "scripts" / "rollback.py"))["main"]
LABELS = ["OMIM:1", "OMIM:2"]


def _state(value: float) -> dict[str, torch.Tensor]:
    return {"head.weight": torch.full((2, 3), value), "head.bias": torch.full((2,), value)}


def _record(round_: int, previous: float, candidate: float, accuracy: dict[str, float], skipped=()) -> RoundRecord:
    outcomes = [
        SiteOutcome(site, SKIPPED if site in skipped else ACCEPTED, n_samples=10, sample_counts={"head.weight": 10},
                    update_norm=1.0, val_metrics={"accuracy": acc})
        for site, acc in accuracy.items()
    ]  # fmt: skip
    return RoundRecord(round_, outcomes, _state(previous), _state(candidate))


def _governance(tmp_path, **promotion):
    cfg = OmegaConf.load(DEFAULT_CONFIG)
    cfg.promotion = OmegaConf.merge(cfg.promotion, promotion)
    return cfg


def _observers(tmp_path, cfg):
    registry = Registry(tmp_path / "registry")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    return [PromotionGate(registry, PromotionRule.from_cfg(cfg.promotion)), LedgerWriter(ledger, {"consortium": "t"}, {"a": 0, "b": 0}),
            RegistryWriter(registry, LABELS, {}, {"governance": "test"})]  # fmt: skip


def _run(records, observers):
    committed = []
    for record in records:
        for observer in observers:
            observer.on_round(record)
        committed.append(record.decision)
    return committed


def test_promotion_rule_refuses_a_drop_at_one_site_or_overall():
    rule = PromotionRule(metric="accuracy", max_drop_overall=0.05, max_drop_site=0.10)
    current = {"a": {"accuracy": 0.80}, "b": {"accuracy": 0.60}}

    assert rule.verdict(current, {"a": {"accuracy": 0.85}, "b": {"accuracy": 0.58}}) is None
    assert "site 'b'" in rule.verdict(current, {"a": {"accuracy": 0.95}, "b": {"accuracy": 0.45}})
    assert "mean accuracy" in rule.verdict(current, {"a": {"accuracy": 0.72}, "b": {"accuracy": 0.55}})
    assert rule.verdict(current, {"a": {"accuracy": math.nan}, "b": {"accuracy": 0.60}}) is None  # NaN sites are skipped


def test_promotion_rule_tolerates_the_noise_of_a_small_validation_split_only():
    rule = PromotionRule(metric="accuracy", max_drop_overall=0.05, max_drop_site=0.10, noise_z=1.64)
    current = {"small": {"accuracy": 0.80}, "big": {"accuracy": 0.80}}

    def candidate(n_small: int, n_big: int, metric: str = "accuracy") -> dict:
        return {"small": {metric: 0.65, "n_patients": n_small}, "big": {metric: 0.80, "n_patients": n_big}}

    # 3 of 20 patients: within sqrt(2 x 0.725 x 0.275 / 20) x 1.64 = 0.23
    assert rule.verdict(current, candidate(20, 500)) is None
    # the same share of 500 patients is a real drop
    assert "site 'small'" in rule.verdict(current, candidate(500, 500))
    # without the allowance, or without n, or for a metric that is not a share of patients, the fixed threshold holds
    assert "max_drop_site=0.1" in PromotionRule(max_drop_site=0.10).verdict(current, candidate(20, 500))
    assert rule.verdict(current, {"small": {"accuracy": 0.65}, "big": {"accuracy": 0.80}}) is not None
    auroc = PromotionRule(metric="macro_auroc", max_drop_site=0.10, noise_z=1.64)
    assert auroc.verdict({"small": {"macro_auroc": 0.8}}, {"small": {"macro_auroc": 0.65, "n_patients": 20}}) is not None


def test_promotion_rule_for_a_metric_where_lower_is_better():
    rule = PromotionRule(metric="ece", higher_is_better=False, max_drop_overall=0.01, max_drop_site=0.5)

    assert rule.verdict({"a": {"ece": 0.10}}, {"a": {"ece": 0.05}}) is None
    assert rule.verdict({"a": {"ece": 0.10}}, {"a": {"ece": 0.20}}) is not None


def test_accepted_rounds_become_versions_and_a_worse_round_is_rejected(tmp_path):
    cfg = _governance(tmp_path)
    records = [
        _record(1, 0.0, 1.0, {"a": 0.50, "b": 0.50}),
        _record(2, 1.0, 2.0, {"a": 0.70, "b": 0.60}),
        _record(3, 2.0, 3.0, {"a": 0.75, "b": 0.30}),  # b drops by 0.3: rejected
    ]

    decisions = _run(records, _observers(tmp_path, cfg))

    registry = Registry(tmp_path / "registry")
    assert decisions == [ROUND_ACCEPTED, ROUND_ACCEPTED, ROUND_REJECTED]
    assert "site 'b'" in records[2].reason
    assert registry.versions() == [0, 1, 2] and registry.current() == 2
    card = registry.card(2)
    assert card["parent"] == 1 and card["round"] == 2 and card["participants"] == ["a", "b"]
    assert card["metrics"]["sites"]["b"]["accuracy"] == 0.60
    assert card["model_hash"] == model_hash(_state(2.0))
    entries = [e for e in read_ledger(tmp_path / "ledger.jsonl") if e["kind"] == "round"]
    assert card["ledger_entry"] == entries[1]["hash"]
    assert entries[2]["data"]["decision"] == ROUND_REJECTED
    assert entries[2]["data"]["model"] == model_hash(_state(2.0))  # the previous model stays
    assert entries[2]["data"]["candidate_model"] == model_hash(_state(3.0))
    assert torch.equal(registry.load(0)["head.bias"], _state(0.0)["head.bias"])  # the initial model is version 0


def test_a_version_whose_file_changed_is_refused(tmp_path):
    registry = Registry(tmp_path)
    registry.save(0, _state(1.0), {"round": 0}, {"labels": "[]"})
    path = registry.path(0) / "model.safetensors"
    save_file({k: v + 1 for k, v in load_file(str(path)).items()}, str(path))

    with pytest.raises(RegistryError, match="does not match its card.*file_sha256"):
        registry.load(0)


def test_versions_are_never_overwritten(tmp_path):
    registry = Registry(tmp_path)
    registry.save(0, _state(1.0), {}, {})

    with pytest.raises(RegistryError, match="exists already"):
        registry.save(0, _state(2.0), {}, {})


def _history(tmp_path):
    """Rounds 1-2 with sites a and b; c joins in round 3."""
    cfg = _governance(tmp_path, max_drop_overall=1.0, max_drop_site=1.0)
    records = [
        _record(1, 0.0, 1.0, {"a": 0.5, "b": 0.5, "c": 0.5}, skipped=("c",)),
        _record(2, 1.0, 2.0, {"a": 0.6, "b": 0.6, "c": 0.5}, skipped=("c",)),
        _record(3, 2.0, 3.0, {"a": 0.7, "b": 0.7, "c": 0.7}),
    ]
    _run(records, _observers(tmp_path, cfg))
    save_file({**_state(3.0), "frozen.weight": torch.ones(4)}, str(tmp_path / "model.safetensors"), metadata={"labels": json.dumps(LABELS)})
    return cfg


def test_rollback_restores_a_version_as_the_runs_model_and_records_it(tmp_path):
    cfg = _history(tmp_path)

    entry = rollback(tmp_path, 1, "round 2 degraded the rural clinic", governance_cfg=cfg)

    model = load_file(str(tmp_path / "model.safetensors"))
    assert torch.equal(model["head.weight"], _state(1.0)["head.weight"])
    assert torch.equal(model["frozen.weight"], torch.ones(4))  # tensors that never travel are kept
    assert Registry(tmp_path / "registry").current() == 1
    assert entry["kind"] == ROLLBACK and entry["data"]["version"] == 1 and entry["data"]["from_version"] == 3
    assert read_ledger(tmp_path / "ledger.jsonl")[-1] == entry


def test_rollback_script_refuses_a_tampered_version_and_writes_nothing(tmp_path, capsys):
    _history(tmp_path)
    path = tmp_path / "registry" / "v0001" / "model.safetensors"
    save_file({k: v * 2 for k, v in load_file(str(path)).items()}, str(path))
    ledger_before = (tmp_path / "ledger.jsonl").read_bytes()
    model_before = (tmp_path / "model.safetensors").read_bytes()

    status = rollback_script([f"run_dir={tmp_path}", "version=1"])

    assert status == 1
    assert "does not match its card" in capsys.readouterr().err
    assert (tmp_path / "ledger.jsonl").read_bytes() == ledger_before
    assert (tmp_path / "model.safetensors").read_bytes() == model_before


def test_rollback_without_a_ledger_is_refused(tmp_path, capsys):
    _history(tmp_path)
    (tmp_path / "ledger.jsonl").unlink()

    assert rollback_script([f"run_dir={tmp_path}", "version=1"]) == 1
    assert "ledger" in capsys.readouterr().err


def test_a_leaving_site_gets_the_latest_version_its_data_never_shaped(tmp_path):
    cfg = _history(tmp_path)
    registry = Registry(tmp_path / "registry")

    assert version_without(registry, "c") == 2  # c first took part in round 3 (version 3)
    assert version_without(registry, "a") == 0  # a shaped everything since round 1
    plan = exit_site(tmp_path, "c", governance_cfg=cfg)

    assert plan.version == 2 and registry.current() == 2
    kinds = [e["kind"] for e in read_ledger(tmp_path / "ledger.jsonl")]
    assert kinds[-2:] == [SITE_EXIT, ROLLBACK]
    assert torch.equal(load_file(str(tmp_path / "model.safetensors"))["head.bias"], _state(2.0)["head.bias"])


def test_lineage_after_a_rollback_is_free_of_the_rolled_back_rounds(tmp_path):
    cfg = _history(tmp_path)
    rollback(tmp_path, 2, governance_cfg=cfg)  # back before c joined
    _run([_record(4, 2.0, 4.0, {"a": 0.8, "b": 0.8, "c": 0.8}, skipped=("c",))], _observers(tmp_path, cfg))

    registry = Registry(tmp_path / "registry")
    assert registry.card(4)["parent"] == 2
    assert version_without(registry, "c") == 4
