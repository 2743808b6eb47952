"""FedProx: the proximal term, its effect on local updates, mu=0 as FedAvg, and the config end to end."""
import json

import pytest
import torch
from support import compose_config, tiny_module, tiny_site

from federation.driver.experiment import run_experiment
from federation.state import get_state, trainable_keys
from federation.strategies.fedavg import FedAvg
from federation.strategies.fedprox import FedProx


def _update(mu: float | None):
    module = tiny_module()
    global_state = get_state(module, trainable_keys(module))
    objective = None if mu is None else FedProx(mu=mu).local_objective()
    return module, global_state, tiny_site("a", 8, True, 1).train(module, global_state, {"max_epochs": 3}, round_=1, seed=1, objective=objective)


def test_proximal_term_is_half_mu_times_the_squared_distance_to_the_reference():
    # Prepare
    module = tiny_module()
    reference = get_state(module, trainable_keys(module))
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01 * torch.randn_like(p))
    params = dict(module.named_parameters())
    by_hand = sum(((params[k] - v) ** 2).sum() for k, v in reference.items() if k in params)

    # Execute
    module.set_proximal(0.3, reference)
    term = module.proximal_term()

    # Assert
    assert by_hand > 0
    assert torch.allclose(term, 0.15 * by_hand)
    assert set(module.proximal_reference) == {k for k, p in params.items() if p.requires_grad}  # parameters, not buffers


def test_a_large_mu_keeps_the_local_update_closer_to_the_globaltiny_module():
    _, _, free = _update(0.0)
    _, _, held = _update(10.0)

    assert 0 < held.norm() < free.norm()


def test_mu_zero_gives_exactly_the_fedavg_update():
    _, global_state, plain = _update(None)
    _, _, prox = _update(0.0)

    assert plain.deltas.keys() == prox.deltas.keys()
    assert all(torch.equal(plain.deltas[k], prox.deltas[k]) for k in plain.deltas)
    assert all(torch.equal(a, b) for a, b in zip(FedAvg().aggregate(global_state, [plain]).values(), FedProx(mu=0.0).aggregate(global_state, [prox]).values()))


def test_the_reference_is_cleared_after_training():
    module, _, _ = _update(1.0)

    assert module.proximal_reference is None and module.proximal_mu == 0.0


def test_sites_refuse_unknown_local_objectives_and_fedprox_refuses_negative_mu():
    module = tiny_module()
    with pytest.raises(ValueError, match="unknown local objective"):
        tiny_site("a", 8, True, 1).train(module, get_state(module, trainable_keys(module)), {"max_epochs": 1}, round_=1, seed=1, objective={"nope": 1})
    with pytest.raises(ValueError, match="mu"):
        FedProx(mu=-1.0)


def test_fedprox_config_composes_with_the_fedavg_keys():
    cfg = compose_config(["federation=fedprox"])
    fedavg = compose_config(["federation=fedavg"])

    assert cfg.federation.strategy._target_ == "federation.strategies.fedprox.FedProx"
    assert cfg.federation.strategy.mu == 0.01
    assert set(cfg.federation) == set(fedavg.federation)


@pytest.mark.slow
def test_one_fedprox_round_writes_the_summary(tmp_path):
    cfg = compose_config(["experiment=smoke", "federation=fedprox", f"paths.data_dir={tmp_path / 'data'}", "progress=false",
                         "baselines.local=false", "baselines.pooled=false", "federation.rounds=1"])

    run_experiment(cfg, tmp_path / "out")

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "federated" in summary["overall"]
