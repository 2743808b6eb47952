"""The per-site privacy budget (Opacus RDP accountant), site-level DP-FedAvg and the privacy config group."""
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from support import compose_config

from federation.privacy.accountant import BudgetExhausted, PrivacyBudget
from federation.privacy.hooks import privacy_kind, site_budgets, wrap_strategy
from federation.privacy.site_dp import SiteLevelDP
from federation.strategies.fedavg import FedAvg
from federation.strategies.secure_fedavg import SecureFedAvg
from federation.update import ModelUpdate


def test_budget_accumulates_and_refuses_before_overrunning():
    budget = PrivacyBudget(1.0, 1e-3, "site_a")

    first = budget.spend(1.5, 0.02, 50)[0]
    second = budget.spend(1.5, 0.02, 50)[0]

    assert 0 < first < second <= 1.0
    assert not budget.can_spend(1.0, 0.02, 1000)
    with pytest.raises(BudgetExhausted, match=r"'site_a' stops contributing.*from epsilon=0\.\d+ to .*over its budget of epsilon=1"):
        budget.spend(1.0, 0.02, 1000)
    assert budget.spent()[0] == second  # a refused spend leaves nothing behind


def test_budget_state_round_trips():
    budget = PrivacyBudget(3.0, 1e-5, "b")
    budget.spend(1.2, 0.1, 7)

    again = PrivacyBudget.from_state_dict(budget.state_dict())

    assert again.spent() == budget.spent() and again.record() == budget.record()


def test_no_noise_means_no_guarantee():
    budget = PrivacyBudget(math.inf, 1e-3)

    budget.spend(0.0, 0.1, 3)

    assert budget.spent()[0] == math.inf


def updates_with_norms(norms, shape=(10_000,)):
    out = []
    for i, norm in enumerate(norms):
        delta = torch.ones(shape) * norm / math.sqrt(shape[0])
        out.append(ModelUpdate(f"s{i}", 1, {"w": delta}, {"w": 100 * (i + 1)}, 100 * (i + 1)))
    return out


def test_site_dp_clips_weights_uniformly_and_adds_calibrated_noise():
    updates = updates_with_norms([5.0, 0.5, 0.5, 0.5])
    noiseless = SiteLevelDP(FedAvg(), clip_norm=1.0, noise_multiplier=0.0, epsilon=math.inf, delta=1e-3)
    noisy = SiteLevelDP(FedAvg(), clip_norm=1.0, noise_multiplier=2.0, epsilon=math.inf, delta=1e-3)

    mean = noiseless.combine(updates)["w"]
    noise = noisy.combine(updates)["w"] - mean

    per_coordinate = 1.0 / 100  # clipped site 0 has norm 1 over 10_000 equal coordinates
    assert torch.allclose(mean, torch.full_like(mean, (per_coordinate + 3 * 0.5 * per_coordinate) / 4))
    assert noise.std().item() == pytest.approx(2.0 * 1.0 / 4, rel=0.05)  # sigma * C / holders
    assert abs(noise.mean().item()) < 0.05


def test_site_dp_stops_a_site_that_would_exceed_its_budget():
    strategy = SiteLevelDP(FedAvg(), clip_norm=1.0, noise_multiplier=3.0, epsilon=3.0, delta=1e-3)
    rounds = 0
    while not strategy.would_exceed("s0"):
        strategy.combine(updates_with_norms([1.0, 1.0]))
        rounds += 1

    result = strategy.combine(updates_with_norms([1.0, 1.0]))

    assert rounds >= 1 and result == {}
    assert "'s0' stops contributing" in strategy.refusals[0]
    report = strategy.privacy_report()
    assert set(report) == {"s0", "s1"} and 0 < report["s0"]["epsilon"] <= 3.0 and report["s0"]["delta"] == 1e-3


def test_site_dp_wraps_secure_aggregation():
    updates = updates_with_norms([0.3, 0.4, 0.2], shape=(50,))
    plain = SiteLevelDP(FedAvg(), 1.0, 0.0, math.inf, 1e-3).combine(updates)["w"]

    secure = SiteLevelDP(SecureFedAvg(threshold=2), 1.0, 0.0, math.inf, 1e-3).combine(updates)["w"]

    assert torch.allclose(plain, secure, atol=1e-5)


@pytest.mark.parametrize("choice, kind", [("none", "none"), ("dp_sgd", "dp_sgd"), ("site_dp", "site_dp")])
def test_privacy_group_composes(choice, kind):
    cfg = compose_config([f"privacy={choice}", "experiment=heart_flamby"])

    assert privacy_kind(cfg.privacy) == kind


def test_site_dp_config_calibrates_noise_to_spend_epsilon_over_the_rounds():
    cfg = compose_config(["privacy=site_dp", "experiment=heart_flamby", "privacy.epsilon=5.0"])
    strategy = wrap_strategy(instantiate(cfg.federation.strategy), cfg.privacy, cfg.federation.rounds)
    budget = strategy.budget("cleveland")

    for _ in range(cfg.federation.rounds):
        budget.spend(strategy.noise_multiplier, strategy.sample_rate)

    assert isinstance(strategy, SiteLevelDP) and 4.9 < budget.spent()[0] <= 5.0
    assert not budget.can_spend(strategy.noise_multiplier, strategy.sample_rate)


def test_dp_sgd_config_gives_each_site_a_budget():
    cfg = compose_config(["privacy=dp_sgd"])

    budgets = site_budgets(cfg.privacy, [type("S", (), {"name": n}) for n in ("a", "b")])

    assert set(budgets) == {"a", "b"} and budgets["a"].epsilon == cfg.privacy.epsilon
    assert site_budgets(compose_config(["privacy=none"]).privacy, []) == {}


def test_dp_sgd_with_only_epsilon_freezes_the_models_public_parts_and_pretrains_on_public_data():
    from federation.build import build_module
    from federation.privacy.public_parts import private_parameter_count

    cfg = compose_config(["privacy=dp_sgd", "privacy.epsilon=8"])
    privacy = OmegaConf.to_container(cfg.privacy, resolve=True)
    tabular = OmegaConf.to_container(compose_config(["privacy=dp_sgd", "experiment=heart_flamby"]).privacy, resolve=True)

    assert privacy["freeze"] == list(cfg.model.public_parts) and privacy["public_pretraining"]["epochs"] > 0
    assert tabular["freeze"] == [], "a model that declares no public parts trains all of them"
    model = build_module(cfg, ["phenotypes", "imaging"], ["OMIM:263570", "OMIM:300894"], seed=0).model
    everything = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < private_parameter_count(model, privacy["freeze"]) < everything / 5
