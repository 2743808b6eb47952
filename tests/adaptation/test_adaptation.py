"""Per-site adaptation and the validation-only choice of what each site deploys (federation/adaptation/)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from support import tiny_module, tiny_site

from federation.adaptation.calibration import fit_adjustment
from federation.adaptation.comparison import paired_difference, verdict
from federation.adaptation.deploy import AdaptationSettings, _cross_fitted, approach_order, deploy
from federation.adaptation.finetune import FineTuneSettings, fine_tune, validation_loss
from federation.adaptation.selection import SelectionSettings, choose, choose_all, log_loss
from federation.evaluation import predict
from federation.settings import ConfigError, check_training_config
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
    choice = choose("s", _candidates(), SelectionSettings(on="accuracy"))
    assert choice.deployed == "calibrated"  # ties with local, listed before it
    assert choice.validation == {"federated": 0.0, "calibrated": 1.0, "local": 1.0}
    assert (choice.reason, choice.criterion) == ("best on validation", "accuracy")


def test_selection_on_log_loss_by_default_takes_the_lowest_and_records_the_criterion():
    choice = choose("s", _candidates(), SelectionSettings())
    assert choice.deployed == "calibrated"  # ties with local, listed before it
    assert choice.validation["calibrated"] == pytest.approx(log_loss(*_candidates()["calibrated"]))
    assert choice.validation["calibrated"] < choice.validation["federated"]
    assert choice.as_record()["criterion"] == "log_loss"


def _confidently_wrong_vs_modestly_right(n: int = 20) -> dict:
    """`finetuned`: right on 18 of 20 but by a hair, and sure of itself on the 2 it gets wrong (higher accuracy);
    `calibrated`: right on 16 by a clear margin, unsure on the 4 it misses (lower log loss)."""
    labels = torch.arange(n) % 2
    sign = labels * 2 - 1.0
    hair = torch.where(torch.arange(n) < 2, -10.0, 0.2) * sign
    clear = torch.where(torch.arange(n) < 4, -0.5, 2.0) * sign
    as_logits = lambda margin: torch.stack([torch.zeros(n), margin], 1)  # noqa: E731
    return {"federated": (torch.zeros(n, 2), labels), "calibrated": (as_logits(clear), labels), "finetuned": (as_logits(hair), labels)}


def test_accuracy_and_log_loss_choose_differently_and_the_log_loss_choice_is_recorded():
    candidates = _confidently_wrong_vs_modestly_right()
    assert choose("s", candidates, SelectionSettings(on="accuracy")).deployed == "finetuned"
    record = choose_all({"s": candidates}, SelectionSettings())["s"].as_record()
    assert (record["deployed"], record["criterion"]) == ("calibrated", "log_loss")
    assert record["validation"]["calibrated"] < record["validation"]["finetuned"]


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
    assert choices["small"].criterion == "log_loss" and "consortium calibrated" in choices["small"].validation
    alone = choose_all({"small": small}, SelectionSettings())  # nobody can choose: the global model
    assert (alone["small"].deployed, alone["small"].validation) == ("federated", {})


def test_selection_refuses_an_unknown_criterion_or_fallback():
    with pytest.raises(ValueError, match="select_on 'f1' is not one of"):
        choose("s", _candidates(), SelectionSettings(on="f1"))
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


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [({"select_on": "auroc"}, "adaptation.select_on"), ({"select": {"metric": "accuracy"}}, "adaptation.select.metric"),
     ({"methods": ["calibrate", "ditto"], "report_only": ["ditto"]}, "adaptation.report_only"),
     ({"report_only": ["calibrate"]}, "adaptation.report_only")],
)
def test_adaptation_config_refuses_a_bad_criterion_or_report_only_naming_the_setting(overrides, setting):
    from omegaconf import OmegaConf

    with pytest.raises(ConfigError) as refused:
        AdaptationSettings.from_cfg(OmegaConf.create({"methods": ["calibrate", "finetune"], **overrides}))
    assert refused.value.setting == setting


def test_the_training_config_check_refuses_a_bad_select_on_before_any_data_is_read():
    from support import compose_config

    with pytest.raises(ConfigError) as refused:
        check_training_config(compose_config(["adaptation.select_on=auroc"]), paths=False)
    assert refused.value.setting == "adaptation.select_on"


def test_adaptation_settings_read_the_default_criterion_and_resamples_from_train_yaml():
    from support import compose_config

    settings = AdaptationSettings.from_cfg(compose_config(["adaptation.bootstrap_resamples=300"]).adaptation)
    assert (settings.select.on, settings.bootstrap_resamples, settings.report_only) == ("log_loss", 300, ())


def test_calibrated_versions_of_every_candidate_are_scored_out_of_fold_and_recorded():
    module, site = tiny_module(), _site_with_test()
    start = get_state(module, trainable_keys(module))
    g = torch.Generator().manual_seed(1)
    local = {k: v + 0.3 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in start.items()}
    settings = AdaptationSettings(("calibrate", "finetune"), finetune=FineTuneSettings(max_epochs=2, patience=1), report_only=("ditto",))
    deployment = deploy(module, [site], start, {site.name: local}, settings, seed=0, device="cpu")[site.name]
    record = deployment.record
    assert list(record["validation"]) == ["federated", "calibrated", "finetuned", "finetuned+calibrated", "local", "local+calibrated"]
    assert record["criterion"] == "log_loss" and set(record["fitted"]["finetuned+calibrated"]) == {"temperature", "bias"}
    set_state(module, local)
    val = predict(module.model, site.loader("val"))
    assert record["validation"]["local+calibrated"] == pytest.approx(log_loss(_cross_fitted(*val, settings), val[1]), abs=1e-4)
    assert "ditto" in deployment.test and "ditto" not in record["validation"]  # shown, never deployed
    best = min(record["validation"].values())
    assert record["deployed"] == next(k for k, v in record["validation"].items() if v == best)
    assert deployment.test["deployed"] is deployment.test[record["deployed"]]


def test_adaptation_approaches_the_report_does_not_list_go_just_before_deployed():
    known = ("local", "federated", "calibrated", "finetuned", "deployed", "pooled")
    order = approach_order(known, ["federated", "calibrated", "finetuned", "finetuned+calibrated", "local+calibrated"])
    assert order == ["local", "federated", "calibrated", "finetuned", "finetuned+calibrated", "local+calibrated", "deployed", "pooled"]


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

    from federation.driver.experiment import run_experiment

    cfg = compose_config(["experiment=heart_flamby", "seeds=[0]", "federation.rounds=2", "federation.local_steps=20", "baselines.epochs=2",
                          "data.split.val_fraction=0.2", "progress=false", "adaptation.finetune.max_epochs=2", "adaptation.bootstrap_resamples=200"])
    summary = run_experiment(cfg, tmp_path)
    assert set(summary["deployment"]) == set(summary["sites"])
    for site, record in summary["deployment"].items():
        assert record["deployed"] in {"federated", "calibrated", "finetuned", "finetuned+calibrated", "local", "local+calibrated"}
        assert record["criterion"] == "log_loss" and "finetuned+calibrated" in summary["sites"][site]
        deployed = summary["sites"][site]["deployed"]["accuracy"]
        assert deployed == summary["sites"][site][record["deployed"]]["accuracy"]
        assert summary["deployed_vs_local"][site]["low"] <= summary["deployed_vs_local"][site]["mean"] <= summary["deployed_vs_local"][site]["high"]
    ledger = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    deployed = {e["data"]["site"]: e["data"]["deployed"] for e in ledger if e["kind"] == "deployment"}
    assert deployed == {s: r["deployed"] for s, r in summary["deployment"].items()}


def _every_site(monkeypatch):
    """benchmarks/every_site.py as a module (it imports benchmarks/strategies.py as a sibling)."""
    import importlib.util
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))
    spec = importlib.util.spec_from_file_location("every_site_benchmark", folder / "every_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_site_shows_fedrep_and_fedbn_only_where_the_model_makes_them_differ(monkeypatch):
    every_site = _every_site(monkeypatch)
    shown = {"report_only": ["finetune_head", "ditto"], "fedbn": True}
    assert every_site.plan(shown, {"body": True, "normalisation": True}) == (["finetune_head", "ditto"], True, [])
    report_only, fedbn, skipped = every_site.plan(shown, {"body": False, "normalisation": False})  # logistic regression
    assert (report_only, fedbn) == (["ditto"], False)
    assert [s.split(" ")[0] for s in skipped] == ["finetuned_head", "fedbn:"]


def test_every_site_puts_the_fedbn_runs_federated_figures_beside_federated(monkeypatch):
    every_site = _every_site(monkeypatch)
    figures = lambda a: {"accuracy": a}  # noqa: E731
    summary = {"metric_names": ["accuracy"], "sites": {"s": {"n_train": 5, "n_test": 4, "local": figures(0.5), "federated": figures(0.6), "deployed": figures(0.7)}},
               "overall": {"local": figures(0.5), "federated": figures(0.6), "deployed": figures(0.7)},
               "mean_over_sites": {"local": figures(0.5), "federated": figures(0.6), "deployed": figures(0.7)},
               "deployment": {"s": {"deployed": "federated", "reason": "best on validation", "criterion": "log_loss"}}}
    fedbn = {"sites": {"s": {"federated": figures(0.8)}}, "overall": {"federated": figures(0.8)}, "mean_over_sites": {"federated": figures(0.8)}}
    merged = every_site.with_fedbn(summary, fedbn)
    assert every_site.columns(merged) == ["local", "federated", "fedbn", "deployed"]
    text = every_site.section("b", {}, merged, 1.0, "cmd")
    assert "| s | 5 | 4 | 0.500 | 0.600 | 0.800 | 0.700 |" in text
    assert "Chosen on validation log loss. Shown only, never deployed: fedbn." in text


def _informative_and_noise(seed: int, n: int = 400) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits that rank the patients, confident noise, labels): a model that learned the task and one that did not."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.5).long()
    score = torch.randn(n, generator=g) + (labels * 2 - 1).float()
    return torch.stack([torch.zeros(n), score], 1), 3 * torch.randn(n, 2, generator=g), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_mixture_weight_goes_to_whichever_model_knows_the_task(seed):
    from federation.adaptation.mixture import fit_mixture

    informative, noise, labels = _informative_and_noise(seed)
    assert fit_mixture(informative, noise, labels, l2=0.01, folds=5).alpha >= 0.95   # the local-only model is noise: the global one
    assert fit_mixture(noise, informative, labels, l2=0.01, folds=5).alpha <= 0.05   # the global model is noise: the local-only one


def test_the_mixture_pools_probabilities_so_a_confidently_wrong_model_costs_a_bounded_loss():
    from federation.adaptation.mixture import fit_alpha, mix

    labels = torch.tensor([0, 1, 1, 0])
    global_logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 1.0], [1.0, 0.0]])
    local_logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [80.0, 0.0], [2.0, 0.0]])  # certain, and wrong on patient 2
    mixed = mix(global_logits, local_logits, 0.3)
    expected = 0.3 * global_logits.softmax(1) + 0.7 * local_logits.softmax(1)
    assert torch.allclose(mixed.softmax(1), expected, atol=1e-6) and torch.allclose(mixed.exp().sum(1), torch.ones(4), atol=1e-6)
    assert -float(mixed.log_softmax(1)[2, 1]) <= -math.log(0.3 * float(global_logits.softmax(1)[2, 1])) + 1e-5
    assert fit_alpha(global_logits, global_logits, labels) == 1.0  # a tie keeps the global model
    assert fit_alpha(global_logits, local_logits, labels[:0]) == 1.0  # nothing to fit on: the global model


def _mixture_deployment(methods=("calibrate", "mixture"), report_only=()):
    module, site = tiny_module(), _site_with_test()
    start = get_state(module, trainable_keys(module))
    g = torch.Generator().manual_seed(3)
    local = {k: v + 0.5 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in start.items()}
    settings = AdaptationSettings(methods, report_only=report_only)
    deployment = deploy(module, [site], start, {site.name: local}, settings, seed=0, device="cpu")[site.name]
    set_state(module, start)
    global_val, global_test = predict(module.model, site.loader("val")), predict(module.model, site.loader("test"))
    set_state(module, local)
    local_val, local_test = predict(module.model, site.loader("val")), predict(module.model, site.loader("test"))
    return deployment, settings, (global_val, local_val), (global_test, local_test)


@pytest.mark.slow
def test_the_mixture_is_chosen_on_its_out_of_fold_validation_loss_and_deploys_the_alpha_it_records():
    from federation.adaptation.mixture import cross_fitted_mixture, fit_mixture, mix

    deployment, settings, (global_val, local_val), (global_test, local_test) = _mixture_deployment()
    record, labels = deployment.record, global_val[1]
    assert list(record["validation"]) == ["federated", "calibrated", "local", "local+calibrated", "mixture"]  # the mixture last
    out_of_fold, alphas = cross_fitted_mixture(global_val[0], local_val[0], labels, settings.calibration_l2, settings.calibration_folds)
    assert record["validation"]["mixture"] == pytest.approx(log_loss(out_of_fold, labels), abs=1e-4)
    whole = fit_mixture(global_val[0], local_val[0], labels, settings.calibration_l2, settings.calibration_folds)
    in_sample = log_loss(whole(global_val[0], local_val[0]), labels)
    assert in_sample < record["validation"]["mixture"] - 1e-3  # fitted and scored on the same patients, it would look better
    fitted = record["fitted"]["mixture"]
    assert (fitted["alpha"], fitted["fold_alphas"], fitted["global"]) == (whole.alpha, alphas, "calibrated")
    adjusted = whole.adjustment(global_test[0])
    assert torch.allclose(deployment.test["mixture"][0], mix(adjusted, local_test[0], fitted["alpha"]), atol=1e-5)
    assert fitted["temperature"] == record["fitted"]["calibrated"]["temperature"]  # the global model as `calibrated` calibrates it


@pytest.mark.slow
def test_the_deployed_alpha_reaches_the_summary_and_the_ledger(tmp_path):
    from support import compose_config

    from federation.adaptation.report import add_deployment
    from federation.driver.experiment import _record_deployments

    deployment, *_ = _mixture_deployment()
    alpha = deployment.record["fitted"]["mixture"]["alpha"]
    predictions = {approach: {"a": pair} for approach, pair in deployment.test.items()}
    summary = add_deployment({}, {"a": deployment}, predictions, resamples=50, seed=0)
    assert summary["deployment"]["a"]["fitted"]["mixture"]["alpha"] == alpha
    _record_deployments(compose_config(), tmp_path, {"a": deployment})
    entries = [json.loads(line) for line in next(tmp_path.rglob("ledger.jsonl")).read_text().splitlines()]
    assert [e["data"]["fitted"]["mixture"]["alpha"] for e in entries if e["kind"] == "deployment"] == [alpha]


def test_a_report_only_mixture_is_shown_and_never_chosen():
    deployment, *_ = _mixture_deployment(methods=("calibrate",), report_only=("mixture",))
    assert "mixture" in deployment.test and "mixture" not in deployment.record["validation"]
    assert "alpha" in deployment.record["fitted"]["mixture"]


@pytest.mark.parametrize(
    ("adaptation", "setting"),
    [({"methods": ["calibrate", "mixture"], "include_local": False}, "adaptation.methods"),
     ({"methods": ["calibrate"], "report_only": ["mixture"], "include_local": False}, "adaptation.report_only")],
)
def test_the_mixture_is_refused_without_the_local_only_model_naming_the_setting(adaptation, setting):
    from omegaconf import OmegaConf

    with pytest.raises(ConfigError, match="local-only model") as refused:
        AdaptationSettings.from_cfg(OmegaConf.create(adaptation))
    assert refused.value.setting == setting
    with pytest.raises(ConfigError):
        AdaptationSettings(("mixture",), include_local=False)


def test_the_training_config_check_refuses_a_mixture_without_local_only_baselines():
    from support import compose_config

    check_training_config(compose_config(["adaptation.methods=[calibrate,finetune,mixture]"]), paths=False)
    with pytest.raises(ConfigError, match="baselines.local=true") as refused:
        check_training_config(compose_config(["adaptation.methods=[calibrate,finetune,mixture]", "baselines.local=false"]), paths=False)
    assert refused.value.setting == "adaptation.methods"


def test_deploy_refuses_a_mixture_at_a_site_without_a_local_only_model():
    module, site = tiny_module(), _site_with_test()
    start = get_state(module, trainable_keys(module))
    with pytest.raises(ConfigError, match="local-only model") as refused:
        deploy(module, [site], start, {}, AdaptationSettings(("mixture",)), seed=0, device="cpu")
    assert refused.value.setting == "adaptation.methods"
