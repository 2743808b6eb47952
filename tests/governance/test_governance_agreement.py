"""The consortium agreement: config composition, privacy requirements, membership and participation rules."""
import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from support import compose_config

from federation.governance import active_sites, build_observers, check_requirements
from federation.governance.agreement import GovernanceError, check_membership, members
from federation.governance.participation import ParticipationGuard
from federation.round_record import ACCEPTED, FAILED, ROUND_ACCEPTED, ROUND_FAILED, ROUND_REJECTED, SKIPPED, RoundRecord, SiteOutcome


def compose_with(*choices: str):
    """The run config with these group choices, whether or not train.yaml already lists the groups."""
    try:
        return compose_config(list(choices))
    except ConfigCompositionException:
        return compose_config([c if c.startswith("federation") else f"+{c}" for c in choices])


def _governance(requires=None, **overrides):
    cfg = compose_with("governance=default").governance
    if requires:
        cfg.sites[1].requires = requires
    return OmegaConf.merge(cfg, overrides)


def _record(round_, statuses, privacy=None):
    state = {"w": torch.zeros(2)}
    outcomes = [SiteOutcome(site, status) for site, status in statuses.items()]
    return RoundRecord(round_, outcomes, state, {"w": torch.ones(2)}, privacy=privacy or {})


def test_governance_group_composes_and_names_the_synthetic_sites():
    cfg = compose_with("governance=default")

    assert [s.name for s in cfg.governance.sites] == [s.name for s in cfg.data.generate.sites]
    assert cfg.governance.promotion.metric == "accuracy"


def test_open_governance_admits_the_runs_sites():
    cfg = compose_with("governance=open").governance

    assert cfg.sites is None
    assert set(members(cfg, ["x", "y"])) == {"x", "y"}


def test_secure_aggregation_requirement_names_the_site():
    cfg = _governance({"secure_aggregation": True, "max_epsilon": None})
    fedavg = compose_config(["federation=fedavg"]).federation
    secure = compose_config(["federation=secure_fedavg"]).federation

    with pytest.raises(GovernanceError, match="childrens_hospital.*secure_aggregation") as caught:
        check_requirements(cfg, fedavg, None)
    check_requirements(cfg, secure, None)

    assert caught.value.site == "childrens_hospital"


@pytest.mark.parametrize(
    ("privacy", "words"),
    [(None, "requires differential privacy"), ("none", "requires differential privacy"), ("site_dp", None)],
)
def test_dp_requirement(privacy, words):
    cfg = _governance({"secure_aggregation": False, "max_epsilon": 3})
    run = compose_with(f"privacy={privacy}") if privacy else compose_config()
    federation, privacy_cfg = run.federation, (run.get("privacy") if privacy else None)

    if words:
        with pytest.raises(GovernanceError, match=f"childrens_hospital.*max_epsilon=3.*{words}"):
            check_requirements(cfg, federation, privacy_cfg)
    else:
        check_requirements(cfg, federation, privacy_cfg)  # epsilon 1.0 <= 3


def test_dp_budget_above_a_sites_maximum_names_both():
    cfg = _governance({"secure_aggregation": False, "max_epsilon": 0.5})
    run = compose_with("privacy=dp_sgd")

    with pytest.raises(GovernanceError, match="privacy.epsilon=1.0, above the site's maximum"):
        check_requirements(cfg, run.federation, run.privacy)


def test_membership_refuses_a_stranger_and_an_undeclared_modality():
    cfg = _governance()

    with pytest.raises(GovernanceError, match="'intruder'.*not a member"):
        check_membership(cfg, {"intruder": ["phenotypes"]})
    with pytest.raises(GovernanceError, match="genomics_lab.*imaging"):
        check_membership(cfg, {"genomics_lab": ["phenotypes", "imaging"]})


def test_too_few_sites_fail_the_round():
    guard = ParticipationGuard(members(_governance()), {"min_sites": 2})
    record = _record(1, {"academic_centre": ACCEPTED, "rural_clinic": FAILED})

    guard.on_round(record)

    assert record.decision == ROUND_FAILED and "minimum of 2" in record.reason


def test_a_site_that_left_cannot_shape_the_model_and_is_no_longer_asked(tmp_path):
    cfg = _governance()
    cfg.sites[4].left_after_round = 2  # genomics_lab
    guard = ParticipationGuard(members(cfg), {"min_sites": 1})
    sites = [s.name for s in cfg.sites]

    kept = _record(2, {"academic_centre": ACCEPTED, "genomics_lab": ACCEPTED})
    guard.on_round(kept)
    late = _record(3, {"academic_centre": ACCEPTED, "genomics_lab": ACCEPTED})
    guard.on_round(late)

    assert kept.decision == ROUND_ACCEPTED
    assert late.decision == ROUND_REJECTED and "'genomics_lab'" in late.reason
    assert late.extra["participation"]["exits"][0]["site"] == "genomics_lab"
    assert "genomics_lab" in active_sites(cfg, tmp_path, 2, sites)
    assert "genomics_lab" not in active_sites(cfg, tmp_path, 3, sites)


def test_missed_cycles_warn_then_exit():
    warn = ParticipationGuard(members(_governance()), {"min_sites": 1, "max_missed": 2, "on_miss": "warn"})
    leave = ParticipationGuard(members(_governance()), {"min_sites": 1, "max_missed": 2, "on_miss": "exit"})
    rounds = [{"academic_centre": ACCEPTED, "rural_clinic": SKIPPED}, {"academic_centre": ACCEPTED, "rural_clinic": FAILED}]

    for i, statuses in enumerate(rounds, start=1):
        warned, left = _record(i, statuses), _record(i, statuses)
        warn.on_round(warned)
        leave.on_round(left)

    assert warned.extra["participation"]["flags"] == {s: ["missed_cycles"] for s in ("childrens_hospital", "regional_adult", "rural_clinic", "genomics_lab")}
    assert warned.extra["participation"]["exits"] == []
    assert "rural_clinic" in {e["site"] for e in left.extra["participation"]["exits"]}
    assert "rural_clinic" in leave.exited


def test_a_site_past_its_privacy_budget_gets_the_round_rejected():
    cfg = _governance({"secure_aggregation": False, "max_epsilon": 2})
    guard = ParticipationGuard(members(cfg), {"min_sites": 1})
    record = _record(1, {"childrens_hospital": ACCEPTED}, privacy={"childrens_hospital": {"epsilon": 2.5, "delta": 1e-3}})

    guard.on_round(record)

    assert record.decision == ROUND_REJECTED and "epsilon=2.5" in record.reason


def test_building_the_observers_writes_nothing_and_refuses_a_damaged_ledger(tmp_path):
    from federation.governance.ledger import LedgerError
    from modalities.site_data import SiteData

    consortium = type("C", (), {"sites": [SiteData("academic_centre", ("phenotypes",), {"train": [], "val": []})]})()
    cfg = _governance()

    observers = build_observers(cfg, tmp_path, consortium, ["OMIM:1"])
    (tmp_path / "ledger.jsonl").write_text('{"seq": 0}\n')

    assert [type(o).__name__ for o in observers][-3:] == ["PromotionGate", "LedgerWriter", "RegistryWriter"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.jsonl"]
    with pytest.raises(LedgerError, match="line 1"):
        build_observers(cfg, tmp_path, consortium, ["OMIM:1"])
    assert build_observers(None, tmp_path, consortium, []) == []
