"""A private run's plan refused before training: an unreachable budget, a delta too large for the smallest site, nothing left to train."""
import pytest
from support import tiny_module, tiny_site
from test_dp_sgd import tabular_module, tabular_site

from federation.privacy.hooks import make_sites_private, wrap_strategy
from federation.privacy.simulation import run_private_federation
from federation.settings import ConfigError
from federation.strategies.fedavg import FedAvg

DP_SGD = {"kind": "dp_sgd", "epsilon": 1.0, "delta": 1e-3, "max_grad_norm": 1.0, "noise_multiplier": None, "per_sample_grads": "auto"}


def test_a_budget_no_noise_can_meet_over_the_planned_rounds_is_refused_naming_epsilon():
    sites = [tabular_site(n=40)]

    with pytest.raises(ConfigError, match=r"^privacy\.epsilon=0\.001: site 'heart_like' plans 300 DP-SGD steps .* no noise multiplier keeps"):
        make_sites_private(DP_SGD | {"epsilon": 0.001}, sites, {"max_epochs": 10}, rounds=3)

    assert sites[0].privacy is None


def test_the_same_budget_over_fewer_rounds_is_accepted():
    sites = [tabular_site(n=40)]

    make_sites_private(DP_SGD | {"epsilon": 0.5}, sites, {"max_epochs": 1}, rounds=1)

    assert sites[0].privacy.config["noise_multiplier"] > 0


def test_site_level_dp_refuses_an_unreachable_budget_naming_epsilon():
    with pytest.raises(ConfigError, match=r"^privacy\.epsilon=0\.001: the coordinator plans 500 noisy rounds"):
        wrap_strategy(FedAvg(), {"kind": "site_dp", "epsilon": 0.001, "delta": 1e-3, "clip_norm": 1.0, "sample_rate": 1.0}, rounds=500)


@pytest.mark.parametrize("delta", [1 / 24, 0.05])
def test_delta_at_or_above_one_over_the_smallest_sites_patients_is_refused(delta):
    sites = [tabular_site(n=40, seed=0), tabular_site(n=24, seed=1)]
    sites[1].data.name = sites[1].name = "small_site"

    with pytest.raises(ConfigError, match=r"^privacy\.delta=.*must be below 1/24 .*site 'small_site' has 24 training patients"):
        make_sites_private(DP_SGD | {"delta": delta}, sites, {"max_epochs": 1}, rounds=1)


def test_delta_just_below_one_over_the_smallest_site_is_accepted():
    sites = [tabular_site(n=24)]

    make_sites_private(DP_SGD | {"delta": 1 / 25}, sites, {"max_epochs": 1}, rounds=1)

    assert sites[0].privacy is not None


def test_a_freeze_list_that_leaves_nothing_trainable_is_refused_before_the_first_round():
    sites = [tiny_site("a", 8, with_imaging=True, seed=0)]
    module = tiny_module()
    everything = ["encoders.*", "fusion.*", "head.*"]

    with pytest.raises(ConfigError, match=r"^privacy\.freeze=\['encoders\.\*', 'fusion\.\*', 'head\.\*'\]: freezes every trainable parameter"):
        run_private_federation(sites, module, FedAvg(), rounds=1, limits={"max_epochs": 1}, seed=0, privacy_cfg=DP_SGD | {"freeze": everything})

    assert sites[0].privacy is None


def test_a_freeze_list_that_keeps_the_head_trainable_is_accepted():
    sites = [tabular_site(n=40)]

    make_sites_private(DP_SGD | {"freeze": ["encoders.*"]}, sites, {"max_epochs": 1}, rounds=1, model=tabular_module().model)

    assert sites[0].privacy is not None


def test_a_plan_refusal_crosses_a_process_boundary_intact():
    """A benchmark's worker pool sends a refusal back pickled: before, ConfigError could not be rebuilt there and the
    pool broke with a TypeError instead of naming the setting."""
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_refuse, "privacy.delta", 0.5, "must be below 1 / 8 patients")
        with pytest.raises(ConfigError, match=r"privacy.delta=0.5: must be below 1 / 8 patients") as caught:
            future.result()
    assert (caught.value.setting, caught.value.value) == ("privacy.delta", 0.5)
    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)


def _refuse(setting, value, rule):
    raise ConfigError(setting, value, rule)
