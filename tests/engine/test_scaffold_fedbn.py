"""SCAFFOLD's control variates and FedBN's local normalisation layers, site and server side."""
import pytest
import torch
from support import tiny_module, tiny_site

from federation.engine import InProcessEngine
from federation.state import get_state, normalisation_keys, trainable_keys
from federation.strategies.fedbn import FedBN
from federation.strategies.scaffold import Scaffold

LIMITS = {"max_epochs": 2}
LR = 0.1  # tiny_module's SGD learning rate


def start():
    module = tiny_module()
    return module, get_state(module, trainable_keys(module))


def test_the_correction_term_adds_exactly_the_correction_to_each_gradient():
    module, _ = start()
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    name = next(iter(params))
    correction = {name: torch.randn_like(params[name])}
    module.set_correction(correction)
    module.correction_term().backward()

    assert torch.allclose(params[name].grad, correction[name])
    assert all(p.grad is None for n, p in params.items() if n != name)
    with pytest.raises(ValueError, match="does not train"):
        module.set_correction({"no.such.parameter": torch.zeros(1)})


def test_a_site_sends_its_control_change_by_option_two_for_the_parameters_it_trains():
    module, state = start()
    site = tiny_site("labs_only", 8, False, seed=1)
    update = site.train(module, state, LIMITS, round_=1, seed=1, objective=Scaffold().local_objective())

    steps = 2 * 2  # 8 samples, batch 4, 2 epochs
    params = {n for n, p in module.named_parameters() if p.requires_grad}
    assert set(update.control_deltas) == set(update.deltas) & params
    assert not any("imaging" in k for k in update.control_deltas)
    for key, change in update.control_deltas.items():
        # c = c_i = 0 in round 1, so c_i+ = (x - y_i) / (K lr) = -delta / (K lr)
        assert torch.allclose(change, -update.deltas[key] / (steps * LR), atol=1e-6)
        assert torch.equal(site.control[key], change)


def test_the_server_control_moves_by_the_sum_of_changes_over_the_holders_of_each_key():
    module, state = start()
    sites = [tiny_site("a", 8, True, 1), tiny_site("b", 8, False, 2)]
    strategy = Scaffold()
    updates = [s.train(module, state, LIMITS, 1, seed=i, objective=strategy.local_objective()) for i, s in enumerate(sites)]
    strategy.aggregate(state, updates)

    head = next(k for k in updates[1].control_deltas)
    imaging = next(k for k in updates[0].control_deltas if "imaging" in k)
    assert torch.allclose(strategy.control[head], (updates[0].control_deltas[head] + updates[1].control_deltas[head]) / 2)
    assert torch.allclose(strategy.control[imaging], updates[0].control_deltas[imaging])
    restored = Scaffold()
    restored.load_state_dict(strategy.state_dict())
    assert restored.local_objective()["scaffold_control"].keys() == strategy.control.keys()


def test_with_controls_in_place_a_site_is_pulled_towards_the_consortium_direction():
    module, state = start()
    site = tiny_site("a", 8, True, 1)
    plain = site.train(module, state, LIMITS, 1, seed=1, objective={"scaffold_control": {}})
    site.control = {}
    pushed = {k: torch.ones_like(v) for k, v in plain.control_deltas.items()}
    corrected = site.train(module, state, LIMITS, 1, seed=1, objective={"scaffold_control": pushed})

    # a correction of +1 on every gradient moves every parameter further down (SGD), on average
    shift = torch.cat([(corrected.deltas[k] - plain.deltas[k]).reshape(-1) for k in pushed])
    assert float(shift.mean()) < 0


def test_fedbn_sites_keep_their_normalisation_layers_and_evaluate_with_them():
    module, state = start()
    norm_keys = normalisation_keys(module) & set(state)
    assert norm_keys, "the tiny model has batch norm in its imaging backbone"
    sites = [tiny_site("a", 8, True, 1), tiny_site("b", 8, True, 2)]
    result = InProcessEngine(sites, module, FedBN(), 2, LIMITS, seed=0).run(progress=False)

    for record in result.records:
        assert all(torch.equal(record.global_state[k], state[k]) for k in norm_keys)  # never averaged
    for site in sites:
        assert set(site.kept_local) == norm_keys
        personal = site.personalise(result.global_state)
        assert all(torch.equal(personal[k], site.kept_local[k]) for k in norm_keys)
    running = next(k for k in norm_keys if k.endswith("running_mean"))
    assert not torch.equal(sites[0].kept_local[running], sites[1].kept_local[running])
    update = sites[0].train(module, result.global_state, LIMITS, 3, seed=3, objective=FedBN().local_objective())
    assert not set(update.deltas) & norm_keys


def test_unknown_keep_local_is_refused():
    module, state = start()
    with pytest.raises(ValueError, match="cannot keep 'everything' local"):
        tiny_site("a", 4, True, 1).train(module, state, LIMITS, 1, seed=1, objective={"keep_local": "everything"})


def test_scaffold_refuses_a_round_optimizer_that_is_not_sgd():
    from functools import partial

    module = tiny_module()
    module.optimizer_factory = partial(torch.optim.Adam, lr=1e-3)
    site = tiny_site("a", 6, True, seed=0)
    state = get_state(module, trainable_keys(module))

    with pytest.raises(ValueError, match="SCAFFOLD needs plain SGD local steps, the round optimizer is Adam"):
        site.train(module, state, {"max_epochs": 1}, 1, seed=0, objective=Scaffold().local_objective())
