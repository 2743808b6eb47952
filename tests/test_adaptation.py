"""Per-site adaptation and the validation-only choice of what each site deploys (federation/adaptation/)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support import tiny_module, tiny_site

from federation.adaptation.calibration import fit_adjustment
from federation.adaptation.comparison import paired_difference, verdict
from federation.adaptation.deploy import AdaptationSettings
from federation.adaptation.finetune import FineTuneSettings, fine_tune, validation_loss
from federation.adaptation.selection import SelectionSettings, choose, choose_all
from federation.state import get_state, set_state, trainable_keys
from modalities.tables import split_rows


def _label_shift(n: int, prevalence: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a model fitted where both classes were equally common, on a site where class 1 has `prevalence`."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < prevalence).long()
    score = torch.randn(n, generator=g) + (labels * 2 - 1).float()
    return torch.stack([torch.zeros(n), score], 1), labels


def test_calibration_learns_a_sites_prior_and_helps_on_new_patients_of_that_site():
    val_logits, val_labels = _label_shift(300, 0.9, seed=0)
    test_logits, test_labels = _label_shift(300, 0.9, seed=1)
    adjustment = fit_adjustment(val_logits, val_labels)
    assert adjustment.bias[1] - adjustment.bias[0] > 0.5  # the class the site sees more often is favoured
    before = (test_logits.argmax(1) == test_labels).float().mean()
    after = (adjustment(test_logits).argmax(1) == test_labels).float().mean()
    assert after > before


def test_calibration_stays_near_the_model_where_the_prior_already_fits():
    logits, labels = _label_shift(400, 0.5, seed=2)
    adjustment = fit_adjustment(logits, labels)
    assert abs(float(adjustment.bias[1] - adjustment.bias[0])) < 0.5


def test_calibration_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="calibration needs"):
        fit_adjustment(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="calibration needs"):
        fit_adjustment(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))


def _candidates(n: int = 20) -> dict:
    labels = torch.arange(n) % 2
    right = torch.nn.functional.one_hot(labels, 2).float()
    return {"federated": (1 - right, labels), "calibrated": (right, labels), "local": (right, labels)}


def test_selection_deploys_the_best_on_validation_and_prefers_the_first_listed_on_ties():
    choice = choose("s", _candidates(), SelectionSettings())
    assert choice.deployed == "calibrated"  # ties with local, listed before it
    assert choice.validation == {"federated": 0.0, "calibrated": 1.0, "local": 1.0}
    assert choice.reason == "best on validation"


def test_selection_keeps_the_global_model_when_it_is_as_good():
    candidates = _candidates()
    candidates["federated"] = candidates["local"]
    choice = choose("s", candidates, SelectionSettings())
    assert (choice.deployed, choice.reason) == ("federated", "best on validation")


@pytest.mark.parametrize(
    ("n", "single_class", "reason"),
    [(0, False, "validation too small (0 < 10 patients)"), (6, False, "validation too small (6 < 10 patients)"), (20, True, "validation has a single class")],
)
def test_selection_falls_back_to_the_global_model_when_validation_cannot_decide(n, single_class, reason):
    candidates = _candidates(n)
    if single_class:
        candidates = {k: (v[0], torch.zeros_like(v[1])) for k, v in candidates.items()}
    choice = choose("s", candidates, SelectionSettings())
    assert (choice.deployed, choice.reason) == ("federated", reason)


def test_a_site_too_small_to_choose_takes_the_method_the_consortiums_pooled_validation_favours():
    big = _candidates(20)
    small = {k: (v[0][:4], v[1][:4]) for k, v in _candidates(4).items()}
    small["calibrated"] = small["federated"]  # this site's own (unusable) evidence says otherwise
    choices = choose_all({"big": big, "small": small}, SelectionSettings())
    assert choices["big"].deployed == "calibrated"
    assert choices["small"].deployed == "calibrated"
    assert choices["small"].reason.startswith("validation too small (4 < 10 patients): the method best on the pooled validation")
    alone = choose_all({"small": small}, SelectionSettings())  # nobody can choose: the global model
    assert (alone["small"].deployed, alone["small"].validation) == ("federated", {})


def test_selection_refuses_an_unknown_metric_or_fallback():
    with pytest.raises(ValueError, match="not a metric"):
        choose("s", _candidates(), SelectionSettings(metric="f1"))
    with pytest.raises(ValueError, match="fallback 'pooled' is not among"):
        choose("s", _candidates(), SelectionSettings(fallback="pooled"))


def test_paired_difference_separates_a_real_gain_from_noise():
    rng = np.random.default_rng(0)
    worse = (rng.random(200) < 0.6).astype(float)
    better = np.maximum(worse, (rng.random(200) < 0.5).astype(float))  # right wherever `worse` is, and more
    gain = paired_difference(better, worse)
    assert gain["low"] > 0 and verdict(gain) == "better"
    assert verdict(paired_difference(worse, better)) == "worse"
    same = paired_difference(worse, worse)
    assert (same["low"], same["high"], verdict(same)) == (0.0, 0.0, "within noise")
    with pytest.raises(ValueError, match="same patients"):
        paired_difference(worse, worse[:-1])


def _site_with_test():
    site = tiny_site("a", 24, with_imaging=False, seed=0)
    site.data.splits["val"] = site.data.splits["val"] + site.data.splits["train"][:9]
    site.data.splits["test"] = site.data.splits["val"]
    return site


def test_fine_tuning_never_returns_weights_worse_on_validation_than_it_started_from():
    module, site = tiny_module(), _site_with_test()
    start = get_state(module, trainable_keys(module))
    set_state(module, start)
    start_loss = validation_loss(module, site)
    state, record = fine_tune(site, module, start, FineTuneSettings(max_epochs=4, patience=1), seed=0)
    set_state(module, state)
    assert validation_loss(module, site) <= start_loss + 1e-6
    assert record["val_loss"] == pytest.approx(validation_loss(module, site), abs=1e-3)
    assert 0 <= record["epochs"] <= 4


def test_head_only_fine_tuning_leaves_the_shared_body_as_it_was():
    module, site = tiny_module(), _site_with_test()
    start = get_state(module, trainable_keys(module))
    state, _ = fine_tune(site, module, start, FineTuneSettings(max_epochs=3, patience=3, part="head"), seed=0)
    body = [k for k in start if not k.startswith("model.head.")]
    assert body and all(torch.equal(state[k], start[k]) for k in body)
    assert all(p.requires_grad for n, p in module.named_parameters() if n.startswith("model.encoders.labs"))  # unfrozen afterwards


def test_a_ditto_personal_model_stays_closer_to_the_global_one_than_plain_fine_tuning():
    module, site = tiny_module(), _site_with_test()
    start = get_state(module, trainable_keys(module))
    distance = lambda state: sum(float(((state[k] - start[k]) ** 2).sum()) for k in start if state[k].is_floating_point())  # noqa: E731
    # patience 3 over 3 epochs: both keep their last epoch unless it is worse on validation
    plain, _ = fine_tune(site, module, start, FineTuneSettings(max_epochs=3, patience=3), seed=0)
    pulled, _ = fine_tune(site, module, start, FineTuneSettings(max_epochs=3, patience=3, proximal_mu=1.0), seed=0)
    assert 0 < distance(pulled) < distance(plain)
    assert module.proximal_mu == 0.0  # the pull is cleared afterwards


def test_fine_tuning_refuses_an_unknown_part():
    module, site = tiny_module(), _site_with_test()
    with pytest.raises(ValueError, match="part must be one of"):
        fine_tune(site, module, get_state(module, trainable_keys(module)), FineTuneSettings(part="encoder"), seed=0)


def test_adaptation_config_refuses_an_unknown_method():
    from omegaconf import OmegaConf

    with pytest.raises(ValueError, match="unknown \\['apfl'\\]"):
        AdaptationSettings.from_cfg(OmegaConf.create({"methods": ["calibrate", "apfl"]}))


def test_a_validation_split_carved_from_training_rows_is_disjoint_and_stratified():
    targets = [0] * 60 + [1] * 40
    split = {"method": "train_test_split", "train_fraction": 0.66, "random_state": 43, "val_fraction": 0.25}
    parts = split_rows(targets, [str(i) for i in range(100)], split, seed=0)
    assert set(parts["train"]).isdisjoint(parts["val"]) and set(parts["val"]).isdisjoint(parts["test"])
    assert len(parts["train"]) + len(parts["val"]) + len(parts["test"]) == 100
    assert abs(np.mean([targets[i] for i in parts["val"]]) - 0.4) < 0.1
    without = split_rows(targets, [str(i) for i in range(100)], {**split, "val_fraction": 0.0}, seed=0)
    assert without["test"] == parts["test"] and without["val"] == []  # the published test rows do not move
    with pytest.raises(ValueError, match="val_fraction"):
        split_rows(targets, [str(i) for i in range(100)], {**split, "val_fraction": 1.0}, seed=0)


@pytest.mark.slow
def test_a_heart_run_records_what_every_site_deployed_in_summary_and_ledger(tmp_path):
    from support import compose_config

    from federation.experiment import run_experiment

    cfg = compose_config(["experiment=heart_flamby", "seeds=[0]", "federation.rounds=2", "federation.local_steps=20", "baselines.epochs=2",
                          "data.split.val_fraction=0.2", "progress=false", "adaptation.finetune.max_epochs=2", "adaptation.bootstrap_resamples=200"])
    summary = run_experiment(cfg, tmp_path)
    assert set(summary["deployment"]) == set(summary["sites"])
    for site, record in summary["deployment"].items():
        assert record["deployed"] in {"federated", "calibrated", "finetuned", "local"}
        deployed = summary["sites"][site]["deployed"]["accuracy"]
        assert deployed == summary["sites"][site][record["deployed"]]["accuracy"]
        assert summary["deployed_vs_local"][site]["low"] <= summary["deployed_vs_local"][site]["mean"] <= summary["deployed_vs_local"][site]["high"]
    ledger = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    deployed = {e["data"]["site"]: e["data"]["deployed"] for e in ledger if e["kind"] == "deployment"}
    assert deployed == {s: r["deployed"] for s, r in summary["deployment"].items()}
