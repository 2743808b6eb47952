"""Monitoring: feature summaries and drift, update anomaly flags, leave-one-out contributions, subgroups."""
import pytest
import torch

from federation.governance.monitoring import (
    DriftMonitor,
    SubgroupMonitor,
    anomaly_flags,
    drift_score,
    feature_summary,
    leave_one_out,
    pool_summaries,
    subgroup_metrics,
)
from federation.governance.monitoring.subgroups import age_band
from federation.round_record import ACCEPTED, RoundRecord, SiteOutcome
from federation.strategies.fedavg import FedAvg
from federation.update import ModelUpdate
from modalities.site_data import SiteData


def _labs_site(name: str, n: int, shift: float = 0.0, seed: int = 0) -> SiteData:
    """Two analytes; the second missing for every other patient. Phenotypes: term 7 for all, term 3 for 2 patients."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        values = torch.randn(2, generator=g) + shift
        missing = torch.tensor([0.0, float(i % 2)])
        terms = torch.tensor([8, 4] if i < 2 else [8, -5])
        items.append({"patient_id": f"{name}{i}", "label": 0, "inputs": {"labs": torch.cat([values, missing]), "phenotypes": terms}})
    return SiteData(name, ("phenotypes", "labs"), {"train": items})


def test_feature_summary_reports_aggregates_and_hides_rare_features():
    summary = feature_summary(_labs_site("a", 40), min_count=5, names={"labs": ["glucose", "lactate"]})

    labs = summary["modalities"]["labs"]
    phenotypes = summary["modalities"]["phenotypes"]["features"]
    assert summary["n"] == 40 and labs["present"] == 1.0
    assert labs["features"]["glucose"]["n"] == 40 and labs["features"]["lactate"]["n"] == 20  # only patients who have it
    assert phenotypes["feature_7"]["mean"] == 1.0
    assert "feature_3" not in phenotypes  # 2 patients < k
    assert "feature_4" not in phenotypes  # excluded terms are not observations


def test_drift_is_zero_for_the_same_data_and_large_for_a_shifted_site():
    reference = feature_summary(_labs_site("a", 60, seed=1))

    same = drift_score(feature_summary(_labs_site("a", 60, seed=1)), reference)
    shifted = drift_score(feature_summary(_labs_site("a", 60, shift=3.0, seed=2)), reference)
    resampled = drift_score(feature_summary(_labs_site("a", 60, seed=3)), reference)

    assert same["score"] == 0.0
    assert shifted["score"] > 0.5 > resampled["score"]
    assert shifted["worst"][0].startswith("labs:")


def test_pooled_summary_weights_sites_by_patients():
    small, large = feature_summary(_labs_site("s", 10, shift=10.0)), feature_summary(_labs_site("l", 90))
    pooled = pool_summaries([small, large])

    glucose = pooled["modalities"]["labs"]["features"]["feature_0"]
    expected = (10 * small["modalities"]["labs"]["features"]["feature_0"]["mean"] + 90 * large["modalities"]["labs"]["features"]["feature_0"]["mean"]) / 100
    assert pooled["n"] == 100 and glucose["mean"] == pytest.approx(expected)


def test_drift_monitor_flags_the_site_whose_data_changed():
    data = {"a": _labs_site("a", 40, seed=1), "b": _labs_site("b", 40, seed=2)}
    monitor = DriftMonitor(lambda: {name: feature_summary(site) for name, site in data.items()}, threshold=0.5)
    first, second = _record(1), _record(2)

    monitor.on_round(first)
    data["b"] = _labs_site("b", 40, shift=3.0, seed=2)
    monitor.on_round(second)

    assert not any(d["flagged"] for d in first.extra["drift"].values())
    assert second.extra["drift"]["b"]["flagged"] and not second.extra["drift"]["a"]["flagged"]
    assert second.extra["drift"]["b"]["vs_others"] > second.extra["drift"]["a"]["vs_first"]


def _record(round_: int) -> RoundRecord:
    state = {"w": torch.zeros(3)}
    return RoundRecord(round_, [SiteOutcome("a", ACCEPTED), SiteOutcome("b", ACCEPTED)], state, state)


def _updates(attacker: dict[str, torch.Tensor] | None = None) -> list[ModelUpdate]:
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(20, generator=g)
    updates = [ModelUpdate(f"h{i}", 1, {"w": direction + 0.1 * torch.randn(20, generator=g)}, {"w": 10}, 10) for i in range(4)]
    if attacker is not None:
        updates.append(ModelUpdate("evil", 1, attacker, {"w": 10}, 10))
    return updates, direction


def test_honest_updates_raise_no_flags():
    updates, _ = _updates()

    assert anomaly_flags(updates) == {u.site: [] for u in updates}


@pytest.mark.parametrize(("scale", "expected"), [(-1.0, ["cosine_low"]), (50.0, ["norm_high"]), (-50.0, ["norm_high", "cosine_low"])])
def test_an_outlying_update_is_flagged(scale, expected):
    _, direction = _updates()
    updates, _ = _updates({"w": scale * direction})

    flags = anomaly_flags(updates)

    assert flags["evil"] == expected
    assert all(flags[f"h{i}"] == [] for i in range(4))


def test_cosine_uses_only_the_parameters_each_site_sent():
    updates, _ = _updates()
    imaging_only = ModelUpdate("img", 1, {"imaging.w": torch.ones(5)}, {"imaging.w": 10}, 10)

    flags = anomaly_flags([*updates, imaging_only])

    assert flags["img"] == []  # nobody else sent its keys: no direction to compare with


def test_leave_one_out_shows_the_site_that_hurts():
    target = torch.ones(4)
    previous = {"w": torch.zeros(4)}
    good = [ModelUpdate(f"g{i}", 1, {"w": target.clone()}, {"w": 10}, 10) for i in range(2)]
    bad = ModelUpdate("bad", 1, {"w": -3 * target}, {"w": 10}, 10)

    def closeness(state):  # higher is better: how near the state is to the target
        return -float((state["w"] - target).norm())

    values = leave_one_out(FedAvg().combine, previous, [*good, bad], closeness)

    assert values["bad"] < 0 < values["g0"]
    assert values["g0"] == pytest.approx(values["g1"])


def test_age_bands():
    bounds = [0, 18, 65]

    assert [age_band(a, bounds) for a in (0.5, 17.9, 18, 64.99, 65, 90, None)] == ["0-17", "0-17", "18-64", "18-64", "65+", "65+", None]


def test_subgroup_metrics_hide_small_groups():
    labels = torch.zeros(16, dtype=torch.long)
    logits = torch.tensor([[5.0, 0.0]] * 8 + [[0.0, 5.0]] * 8)  # the 8 girls are diagnosed right, the men not
    metas = [{"sex": "FEMALE", "age_years": 5}] * 8 + [{"sex": "MALE", "age_years": 40}] * 4 + [{"sex": "MALE", "age_years": 70}] * 2
    metas += [{"sex": "UNKNOWN_SEX", "age_years": None}] * 2

    groups = subgroup_metrics(logits, labels, metas, [0, 18, 65], min_count=5)

    assert groups["sex"] == {"FEMALE": {"n": 8, "accuracy": 1.0, "top3_accuracy": 1.0}, "MALE": {"n": 6, "accuracy": 0.0, "top3_accuracy": 1.0}}
    assert groups["age_band"]["0-17"]["n"] == 8
    assert groups["age_band"]["18-64"] == {"n": "<5", "accuracy": None, "top3_accuracy": None}
    assert groups["age_band"]["65+"]["accuracy"] is None
    assert "ancestry" not in groups  # nobody's ancestry is known


def test_one_small_group_hides_the_next_smallest_too():
    labels = torch.zeros(12, dtype=torch.long)
    metas = [{"sex": "FEMALE"}] * 8 + [{"sex": "MALE"}] * 4  # 4 men: hidden; 8 women would reveal it from the total

    groups = subgroup_metrics(torch.zeros(12, 2), labels, metas, [0], min_count=5)

    assert groups["sex"]["MALE"]["n"] == "<5" and groups["sex"]["FEMALE"] == {"n": "suppressed", "accuracy": None, "top3_accuracy": None}


def test_subgroup_monitor_pools_sites():
    class Evaluator:
        sites = ("a", "b")

        def predictions(self, state, site):
            right = site == "a"
            return torch.tensor([[5.0, 0.0] if right else [0.0, 5.0]] * 6), torch.zeros(6, dtype=torch.long)

        def metas(self, site):
            return [{"sex": "FEMALE" if site == "a" else "MALE", "ancestry": "AFR"}] * 6

    record = _record(1)
    SubgroupMonitor(Evaluator(), [0, 18, 65], min_count=5).on_round(record)

    groups = record.extra["subgroups"]
    assert groups["sex"]["FEMALE"]["accuracy"] == 1.0 and groups["sex"]["MALE"]["accuracy"] == 0.0
    assert groups["ancestry"]["AFR"] == {"n": 12, "accuracy": 0.5, "top3_accuracy": 1.0}
