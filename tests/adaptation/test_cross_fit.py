"""Cross-fitted selection (federation/adaptation/cross_fit.py): every training patient takes part in a site's choice."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support import compose_config

from federation.adaptation import cross_fit
from federation.adaptation.deploy import AdaptationSettings, SitePredictions, choose_deployments
from federation.settings import ConfigError
from modalities.tables import split_rows

HEART_SPLIT = {"method": "train_test_split", "train_fraction": 0.66, "random_state": 43}


def test_the_validation_folds_cover_every_training_row_once_and_never_touch_the_test_rows():
    targets = [0] * 70 + [1] * 50
    ids = [str(i) for i in range(120)]
    folds = [split_rows(targets, ids, {**HEART_SPLIT, "val_fraction": 0.2, "val_fold": k}, seed=0) for k in range(5)]
    test = folds[0]["test"]
    assert all(f["test"] == test for f in folds)  # the published test rows do not move
    vals = [set(f["val"]) for f in folds]
    assert sorted(i for v in vals for i in v) == sorted(set(range(120)) - set(test))  # each training row in exactly one fold
    for f in folds:
        assert set(f["train"]).isdisjoint(f["val"]) and len(f["train"]) + len(f["val"]) + len(f["test"]) == 120
        assert abs(np.mean([targets[i] for i in f["val"]]) - np.mean([targets[i] for i in f["train"]])) < 0.1  # stratified


def test_a_fold_outside_the_folds_is_refused_naming_the_setting():
    targets = [0] * 30 + [1] * 30
    with pytest.raises(ValueError, match="val_fold"):
        split_rows(targets, [str(i) for i in range(60)], {**HEART_SPLIT, "val_fraction": 0.2, "val_fold": 5}, seed=0)


def _site(n_val: int, shift: float, seed: int, n_test: int = 30) -> SitePredictions:
    """Candidates of one fold at one site: the global model's logits are off by `shift` on class 1, local's are right."""
    g = torch.Generator().manual_seed(seed)

    def pair(n):
        labels = (torch.rand(n, generator=g) < 0.5).long()
        score = (labels * 2 - 1).float() + torch.randn(n, generator=g)
        return torch.stack([torch.zeros(n), score], 1), labels

    val, test = pair(n_val), pair(n_test)
    shifted = lambda p: (p[0] + torch.tensor([0.0, shift]), p[1])  # noqa: E731
    return SitePredictions({"federated": shifted(val), "local": val}, {"federated": shifted(test), "local": test}, {})


def test_merged_folds_put_the_validation_patients_together_and_average_the_test_logits():
    torch.manual_seed(0)
    folds = []
    for k in range(3):
        site = _site(6, -3.0, seed=k)
        site.test = {name: (logits + k, _site(6, -3.0, seed=0).test["local"][1]) for name, (logits, _) in site.test.items()}
        folds.append({"a": site})
    merged = cross_fit.merge_folds(folds)["a"]
    assert merged.val["local"][0].shape[0] == 18
    assert torch.equal(merged.val["local"][1], torch.cat([f["a"].val["local"][1] for f in folds]))
    assert torch.allclose(merged.test["local"][0], torch.stack([f["a"].test["local"][0] for f in folds]).mean(0))


def test_folds_with_different_test_patients_are_refused():
    folds = [{"a": _site(6, 0.0, seed=0)}, {"a": _site(6, 0.0, seed=1)}]
    with pytest.raises(ValueError, match="test patients differ"):
        cross_fit.merge_folds(folds)


def test_a_site_too_small_to_choose_on_one_fold_chooses_on_all_of_them():
    """6 validation patients per fold cannot decide (min_val 10); the 5 folds' 30 patients can, and see the shift."""
    settings = AdaptationSettings(methods=())
    labels = _site(6, -3.0, seed=0).test["local"][1]
    folds = []
    for k in range(5):
        site = _site(6, -3.0, seed=10 + k)
        site.test = {n: (p[0], labels) for n, p in _site(6, -3.0, seed=0).test.items()}
        folds.append({"small": site})
    one_fold = choose_deployments(folds[0], settings)["small"]
    assert one_fold.record["deployed"] == "federated" and "too small" in one_fold.record["reason"]
    merged = choose_deployments(cross_fit.merge_folds(folds), settings)["small"]
    assert merged.record["n_val"] == 30 and merged.record["deployed"] == "local" and merged.record["reason"] == "best on validation"


@pytest.mark.parametrize("overrides, message", [
    (["adaptation.cross_fit=-1"], "must be 0"),
    (["adaptation.cross_fit=3", "adaptation.enabled=false"], "adaptation.enabled"),
    (["adaptation.cross_fit=3"], "data.split.val_fold"),   # the default synthetic data has no carved validation
])
def test_cross_fitting_is_refused_where_it_cannot_run_naming_the_setting(overrides, message):
    cfg = compose_config(overrides)
    with pytest.raises(ConfigError, match=message) as error:
        cross_fit.folds(cfg)
    assert "adaptation.cross_fit" in str(error.value)


def test_a_heart_config_cross_fits_with_validation_folds_of_its_training_rows():
    cfg = compose_config(["experiment=heart_flamby", "adaptation.cross_fit=4"])
    assert cross_fit.folds(cfg) == 4
    fold = cross_fit.fold_data(cfg.data, 2, 4)
    assert fold.split.val_fold == 2 and fold.split.val_fraction == pytest.approx(0.25) and cfg.data.split.val_fold is None


@pytest.mark.slow
def test_a_cross_fitted_heart_run_chooses_on_every_training_patient_and_records_it(tmp_path):
    from federation.driver.experiment import run_experiment

    cfg = compose_config(["experiment=heart_flamby", "seeds=[0]", "federation.rounds=2", "federation.local_steps=10", "baselines.epochs=1",
                          "adaptation.cross_fit=2", "progress=false", "adaptation.methods=[calibrate]", "adaptation.bootstrap_resamples=100"])
    summary = run_experiment(cfg, tmp_path)
    for site, record in summary["deployment"].items():
        assert record["cross_fit"]["folds"] == 2
        assert record["n_val"] >= summary["sites"][site]["n_train"]  # two folds: the validation rows of both, half each
        assert summary["sites"][site]["deployed"]["accuracy"] == summary["sites"][site][record["deployed"]]["accuracy"]
    n_rows = {s: summary["deployment"][s]["n_val"] for s in summary["deployment"]}
    assert n_rows["cleveland"] > 150  # every training row of the centre, not one fold's draw
    for k in range(2):
        ledger = [json.loads(line) for line in (tmp_path / f"fold_{k}" / "ledger.jsonl").read_text().splitlines()]
        assert {e["data"]["site"] for e in ledger if e["kind"] == "deployment"} == set(summary["deployment"])
