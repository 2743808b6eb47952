"""FedOpt server optimisers (Reddi et al. 2021): first-round steps by hand, modality-aware keys, configs."""
import json
import math

import pytest
import torch
from hydra.utils import instantiate
from support import compose_config

from federation.driver.experiment import run_experiment
from federation.strategies.fedadagrad import FedAdagrad
from federation.strategies.fedadam import FedAdam
from federation.strategies.fedyogi import FedYogi
from federation.update import ModelUpdate

ETA, TAU, BETA1, BETA2 = 0.1, 1e-3, 0.9, 0.99



def _next_v(name: str, v: float, g2: float) -> float:
    """Algorithm 2 of the paper, one element at a time."""
    if name == "adam":
        return BETA2 * v + (1 - BETA2) * g2
    if name == "yogi":
        return v - (1 - BETA2) * g2 * math.copysign(1.0, v - g2)
    return v + g2


STRATEGIES = {
    "adam": lambda: FedAdam(eta=ETA, tau=TAU, beta1=BETA1, beta2=BETA2),
    "yogi": lambda: FedYogi(eta=ETA, tau=TAU, beta1=BETA1, beta2=BETA2),
    "adagrad": lambda: FedAdagrad(eta=ETA, tau=TAU, beta1=BETA1),
}


def _first_step(name: str, x: float, g: float) -> float:
    m = (1 - BETA1) * g  # m_{-1} = 0
    v = _next_v(name, TAU**2, g * g)  # v_{-1} = tau^2
    return x + ETA * m / (math.sqrt(v) + TAU)


# Two sites: "a" has imaging, "b" has not; neither sent "text". The second shared
# element is tiny (its square is below tau^2) so Yogi's sign takes both values.
GLOBAL = {"shared": torch.tensor([1.0, 2.0]), "img": torch.tensor([0.5]), "text": torch.tensor([3.0])}
SITE_A = ModelUpdate("a", 1, {"shared": torch.tensor([0.2, 1e-4]), "img": torch.tensor([0.4])}, {"shared": 1, "img": 1}, 1)
SITE_B = ModelUpdate("b", 1, {"shared": torch.tensor([0.5, -2e-4])}, {"shared": 3}, 3)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_first_round_follows_the_paper(name):
    # Prepare
    strategy = STRATEGIES[name]()
    mean_shared = [(1 * 0.2 + 3 * 0.5) / 4, (1 * 1e-4 + 3 * -2e-4) / 4]

    # Execute
    new_state = strategy.aggregate(GLOBAL, [SITE_A, SITE_B])

    # Assert
    expected_shared = torch.tensor([_first_step(name, x, g) for x, g in zip([1.0, 2.0], mean_shared)])
    assert torch.allclose(new_state["shared"], expected_shared, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(new_state["shared"], GLOBAL["shared"])


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_key_from_one_site_moves_by_that_sites_delta_only(name):
    heavier_b = ModelUpdate("b", 1, SITE_B.deltas, {"shared": 100}, 100)

    new_state = STRATEGIES[name]().aggregate(GLOBAL, [SITE_A, heavier_b])

    expected = _first_step(name, 0.5, 0.4)
    assert torch.allclose(new_state["img"], torch.tensor([expected]), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_key_no_site_sent_keeps_its_value_and_moments(name):
    # Prepare: round 1 moves "img"; in round 2 only "b" (no imaging) reports
    strategy = STRATEGIES[name]()
    state = strategy.aggregate(GLOBAL, [SITE_A, SITE_B])
    moments = strategy.state_dict()

    # Execute
    next_state = strategy.aggregate(state, [SITE_B])

    # Assert
    assert "text" not in moments["m"] and torch.equal(next_state["text"], GLOBAL["text"])
    assert torch.equal(next_state["img"], state["img"])
    assert torch.equal(strategy.m["img"], moments["m"]["img"]) and torch.equal(strategy.v["img"], moments["v"]["img"])
    assert not torch.equal(strategy.m["shared"], moments["m"]["shared"])


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_state_dict_resumes_the_same_trajectory(name):
    straight, resumed = STRATEGIES[name](), STRATEGIES[name]()
    state = straight.aggregate(GLOBAL, [SITE_A, SITE_B])
    resumed.load_state_dict(straight.state_dict())

    expected = straight.aggregate(state, [SITE_A, SITE_B])
    got = resumed.aggregate(state, [SITE_A, SITE_B])

    assert all(torch.equal(expected[k], got[k]) for k in GLOBAL)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_nan_update_is_refused_and_moments_stay_empty(name):
    strategy = STRATEGIES[name]()
    evil = ModelUpdate("evil", 1, {"shared": torch.tensor([float("nan"), 0.0])}, {"shared": 1}, 1)

    with pytest.raises(ValueError, match="NaN"):
        strategy.aggregate(GLOBAL, [SITE_A, evil])
    assert strategy.state_dict() == {"m": {}, "v": {}}


def test_no_updates_leave_the_model_unchanged():
    strategy = FedAdam()

    assert strategy.aggregate(GLOBAL, []) == GLOBAL


@pytest.mark.parametrize("name, cls", [("fedadam", "FedAdam"), ("fedyogi", "FedYogi"), ("fedadagrad", "FedAdagrad")])
def test_fedopt_configs_compose_with_train(name, cls):
    cfg = compose_config([f"federation={name}"])

    strategy = instantiate(cfg.federation.strategy)
    assert type(strategy).__name__ == cls
    assert cfg.federation.rounds >= 1 and cfg.federation.optimizer is None


@pytest.mark.slow
def test_one_round_smoke_run_with_fedyogi_writes_summary(tmp_path):
    cfg = compose_config(["experiment=smoke", "federation=fedyogi", f"paths.data_dir={tmp_path / 'data'}", "progress=false",
                         "baselines.local=false", "baselines.pooled=false", "federation.rounds=1"])

    run_experiment(cfg, tmp_path / "run")

    assert cfg.federation.strategy._target_.endswith("FedYogi")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "federated" in summary["overall"]


def test_fedopt_averages_buffers_and_steps_only_parameters_adaptively():
    strategy = FedAdam(eta=0.5, tau=1e-3)
    strategy.set_parameter_keys({"w"})
    state = {"w": torch.zeros(3), "bn.running_var": torch.ones(3)}
    update = ModelUpdate("a", 1, {"w": torch.full((3,), -0.01), "bn.running_var": torch.full((3,), -0.5)}, {"w": 1, "bn.running_var": 1}, 1)
    after = strategy.aggregate(state, [update])

    assert torch.allclose(after["bn.running_var"], torch.full((3,), 0.5))  # the mean statistic, not an Adam step
    assert float(after["w"][0]) < -0.01  # the adaptive step on the weight is larger than the raw delta
