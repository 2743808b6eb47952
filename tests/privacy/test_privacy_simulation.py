"""Rounds with the privacy hooks: privacy reported per site per round, and sites stop at their budget."""
import torch
from support import tiny_module, tiny_site
from test_dp_sgd import tabular_module, tabular_site

from federation.privacy.simulation import run_private_federation
from federation.state import get_state, trainable_keys
from federation.strategies.fedavg import FedAvg


def test_dp_sgd_rounds_report_epsilon_per_site_and_stop_at_the_budget():
    sites = [tabular_site(n=40, seed=0), tabular_site(n=24, seed=1)]
    sites[1].data.name = sites[1].name = "small_site"
    privacy = {"kind": "dp_sgd", "epsilon": 1.0, "delta": 1e-3, "max_grad_norm": 1.0, "noise_multiplier": 1.2, "per_sample_grads": "auto"}
    module = tabular_module()

    run = run_private_federation(sites, module, FedAvg(), rounds=6, limits={"max_steps": 10}, seed=0, privacy_cfg=privacy)

    spent = [r["privacy"]["small_site"]["epsilon"] for r in run.rounds]
    assert spent == sorted(spent) and max(spent) <= 1.0
    stopped = [r for r in run.rounds if "small_site" in r["stopped"]]
    assert stopped, "a fixed noise multiplier over six rounds must reach the budget"
    assert "stops contributing" in stopped[0]["stopped"]["small_site"] and "small_site" not in stopped[0]["sites"]


def test_site_dp_rounds_train_with_lightning_and_report_the_strategy_budgets():
    sites = [tiny_site("a", 8, with_imaging=True, seed=0), tiny_site("b", 8, with_imaging=False, seed=1), tiny_site("c", 8, with_imaging=True, seed=2)]
    privacy = {"kind": "site_dp", "epsilon": 20.0, "delta": 1e-3, "clip_norm": 0.5, "noise_multiplier": None, "sample_rate": 1.0, "seed": 0}
    module = tiny_module()
    start = get_state(module, trainable_keys(module))

    run = run_private_federation(sites, module, FedAvg(), rounds=2, limits={"max_epochs": 1}, seed=0, privacy_cfg=privacy)

    assert [sorted(r["sites"]) for r in run.rounds] == [["a", "b", "c"]] * 2
    assert set(run.rounds[-1]["privacy"]) == {"a", "b", "c"} and 0 < run.rounds[-1]["privacy"]["a"]["epsilon"] <= 20.0
    assert any(not torch.equal(run.global_state[k], start[k]) for k in start)



def test_a_private_run_of_zero_rounds_spends_nothing_and_a_run_without_dp_guarantees_nothing():
    from federation.privacy.membership import epsilon_spent
    from federation.privacy.simulation import PrivateRun

    dp = {"kind": "dp_sgd", "epsilon": 1.0}
    two_sites = PrivateRun({}, [{"round": 1, "privacy": {"a": {"epsilon": 0.4}, "b": {"epsilon": 0.7}}}])

    assert epsilon_spent(PrivateRun({}, []), dp) == 0.0
    assert epsilon_spent(two_sites, dp) == 0.7
    assert epsilon_spent(PrivateRun({}, [{"round": 1, "privacy": {}}]), {"kind": "none"}) == float("inf")
