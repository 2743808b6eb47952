"""Simulated Byzantine sites: what they send, and that the config names real sites."""
import pytest
import torch
from support import tiny_module, tiny_site

from federation.attacks import AttackingSite, with_attackers
from federation.engine import InProcessEngine
from federation.round_record import REJECTED
from federation.state import get_state, trainable_keys
from federation.strategies.median import Median


def honest_and_attacked(kind):
    module = tiny_module()
    state = get_state(module, trainable_keys(module))
    honest = tiny_site("a", 8, True, 1).train(module, state, {"max_epochs": 1}, 1, seed=1)
    attacked = AttackingSite(tiny_site("a", 8, True, 1), kind, scale=10).train(module, state, {"max_epochs": 1}, 1, seed=1)
    return honest, attacked


def test_sign_flip_sends_minus_scale_times_the_honest_update():
    honest, attacked = honest_and_attacked("sign_flip")

    assert all(torch.allclose(attacked.deltas[k], -10 * honest.deltas[k]) for k in honest.deltas)


def test_a_nan_site_is_refused_every_round_and_a_robust_strategy_carries_on():
    sites = with_attackers([tiny_site(n, 6, True, i) for i, n in enumerate("abcd")], [{"site": "b", "kind": "non_finite"}])
    result = InProcessEngine(sites, tiny_module(), Median(), 2, {"max_epochs": 1}, seed=0).run(progress=False)

    assert [r.outcome("b").status for r in result.records] == [REJECTED, REJECTED]
    assert all(torch.isfinite(t).all() for t in result.global_state.values())


def test_attackers_must_name_sites_of_the_consortium_and_known_attacks():
    sites = [tiny_site("a", 4, True, 1)]
    with pytest.raises(ValueError, match="lacks: \\['z'\\]"):
        with_attackers(sites, [{"site": "z", "kind": "non_finite"}])
    with pytest.raises(ValueError, match="unknown attack 'flood'"):
        with_attackers(sites, [{"site": "a", "kind": "flood"}])
