"""Robust aggregation: one attacker among honest sites, per key over the sites that sent it."""

import hydra
import pytest
import torch
from support import compose_config

from federation.robust import (
    clip_to_norm,
    coordinate_median,
    krum_scores,
    trimmed_mean,
    weighted_coordinate_median,
)
from federation.strategies.base import Strategy
from federation.strategies.fedavg import FedAvg
from federation.strategies.krum import MultiKrum
from federation.strategies.median import Median
from federation.strategies.norm_bounding import NormBounding
from federation.strategies.trimmed_mean import TrimmedMean
from federation.update import ModelUpdate

SHAPES = {"head.weight": (3, 4), "head.bias": (3,)}
N_HONEST = 4



def _update(site: str, deltas: dict[str, torch.Tensor], n: int = 10) -> ModelUpdate:
    return ModelUpdate(site, 1, deltas, {k: n for k in deltas}, n)


def _attack_round():
    """Four honest sites send the true direction plus small noise; the attacker sends it sign-flipped, times 10."""
    g = torch.Generator().manual_seed(0)
    true = {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}
    honest = [_update(f"h{i}", {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in true.items()}) for i in range(N_HONEST)]
    attacker = _update("evil", {k: -10 * v for k, v in true.items()})
    global_state = {k: torch.zeros(s) for k, s in SHAPES.items()}
    honest_mean = {k: torch.stack([u.deltas[k] for u in honest]).mean(0) for k in SHAPES}
    return global_state, honest, attacker, honest_mean


def _distance(state: dict, target: dict) -> float:
    return float(torch.sqrt(sum(((state[k] - target[k]) ** 2).sum() for k in target)))


def _norm(deltas: dict) -> float:
    return float(torch.sqrt(sum((d**2).sum() for d in deltas.values())))


@pytest.mark.parametrize(
    "strategy", [Median(), TrimmedMean(trim_fraction=0.2), MultiKrum(n_byzantine=1, n_selected=1), MultiKrum(n_byzantine=1, n_selected=3)], ids=repr
)
def test_robust_strategies_stay_near_the_honest_mean_where_fedavg_does_not(strategy):
    # Prepare
    global_state, honest, attacker, honest_mean = _attack_round()
    updates = honest[:2] + [attacker] + honest[2:]

    # Execute
    robust = strategy.aggregate(global_state, updates)
    plain = FedAvg().aggregate(global_state, updates)

    # Assert
    assert _distance(robust, honest_mean) < 0.05
    assert _distance(plain, honest_mean) > 1.0


def test_norm_bounding_caps_the_attackers_contribution_to_the_bound():
    # Prepare
    global_state, honest, attacker, honest_mean = _attack_round()
    bound = max(_norm(u.deltas) for u in honest)
    updates = honest + [attacker]

    # Execute
    bounded = NormBounding(max_norm=bound, n_byzantine=0).aggregate(global_state, updates)  # clipping alone
    plain = FedAvg().aggregate(global_state, updates)

    # Assert: honest updates pass unclipped, the attacker's shifts the mean by at most (bound + |honest mean|) / n
    clipped = clip_to_norm(attacker.deltas, bound)
    assert _norm(clipped) == pytest.approx(bound, rel=1e-5)
    for u in honest:
        assert all(torch.equal(a, b) for a, b in zip(clip_to_norm(u.deltas, bound).values(), u.deltas.values()))
    n = len(updates)
    assert _distance(bounded, honest_mean) <= (bound + _norm(honest_mean)) / n + 1e-5
    expected = {k: (sum(u.deltas[k] for u in honest) + clipped[k]) / n for k in SHAPES}
    assert _distance(bounded, expected) < 1e-5
    assert _distance(plain, honest_mean) > 4 * _distance(bounded, honest_mean)


def test_multi_krum_never_selects_the_attacker_even_when_sites_hold_different_modalities():
    # Prepare: one honest site also trains an imaging encoder; Krum compares on the shared keys
    _, honest, attacker, _ = _attack_round()
    honest[0].deltas["imaging.weight"] = torch.full((2,), 100.0)
    honest[0].sample_counts["imaging.weight"] = 10
    updates = [attacker] + honest

    for n_selected in range(1, N_HONEST + 1):
        # Execute
        selected = MultiKrum(n_byzantine=1, n_selected=n_selected).select(updates)

        # Assert: per key, the n_selected best of its senders (imaging: the one honest site that sent it)
        assert all(len(chosen) == n_selected and attacker not in chosen for key, chosen in selected.items() if key != "imaging.weight")
        assert selected["imaging.weight"] == [honest[0]]


def test_a_key_sent_by_one_site_takes_that_sites_delta():
    # Prepare
    global_state = {"shared": torch.zeros(2), "imaging": torch.ones(3), "untouched": torch.ones(1)}
    a = _update("a", {"shared": torch.tensor([1.0, 2.0]), "imaging": torch.tensor([0.5, -0.5, 2.0])})
    b = _update("b", {"shared": torch.tensor([3.0, 4.0])})
    strategies = [Median(), TrimmedMean(0.4), MultiKrum(n_byzantine=0, n_selected=2), NormBounding(max_norm=100.0), FedAvg()]

    for strategy in strategies:
        # Execute
        state = strategy.aggregate(global_state, [a, b])

        # Assert
        assert torch.allclose(state["imaging"], torch.tensor([1.5, 0.5, 3.0])), strategy
        assert torch.allclose(state["shared"], torch.tensor([2.0, 3.0])), strategy
        assert torch.equal(state["untouched"], global_state["untouched"]), strategy


def test_median_by_hand():
    odd = [torch.tensor([1.0, 5.0]), torch.tensor([2.0, -1.0]), torch.tensor([10.0, 0.0])]
    even = [torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([3.0]), torch.tensor([100.0])]

    assert torch.allclose(coordinate_median(odd).float(), torch.tensor([2.0, 0.0]))
    assert torch.allclose(coordinate_median(even).float(), torch.tensor([2.5]))
    assert torch.allclose(coordinate_median([torch.tensor([[7.0, -3.0]])]).float(), torch.tensor([[7.0, -3.0]]))


def test_trimmed_mean_by_hand():
    values = [torch.tensor([v, -v]) for v in (1.0, 2.0, 3.0, 4.0, 100.0)]

    assert torch.allclose(trimmed_mean(values, 0.2).float(), torch.tensor([3.0, -3.0]))
    assert torch.allclose(trimmed_mean(values, 0.0).float(), torch.tensor([22.0, -22.0]))
    assert torch.allclose(trimmed_mean(values[:1], 0.4).float(), torch.tensor([1.0, -1.0]))
    # 1, 2 and 100: a fraction of 0.25 trims none, at_least=1 trims one from each end; two values are never trimmed
    three = [values[0], values[1], values[4]]
    assert torch.allclose(trimmed_mean(three, 0.25).float(), torch.tensor([103.0 / 3, -103.0 / 3]))
    assert torch.allclose(trimmed_mean(three, 0.25, at_least=1).float(), torch.tensor([2.0, -2.0]))
    assert torch.allclose(trimmed_mean(values[:2], 0.25, at_least=1).float(), torch.tensor([1.5, -1.5]))
    with pytest.raises(ValueError, match="trim_fraction"):
        trimmed_mean(values, 0.5)


def test_weighted_median_by_hand():
    values = [torch.tensor([1.0, 10.0]), torch.tensor([2.0, 20.0]), torch.tensor([3.0, 30.0]), torch.tensor([100.0, -5.0])]

    # equal weights: the plain median, odd and even counts
    assert torch.equal(weighted_coordinate_median(values, [1, 1, 1, 1]), coordinate_median(values))
    assert torch.equal(weighted_coordinate_median(values[:3], [2, 2, 2]), coordinate_median(values[:3]))
    # a site with more than half the weight decides every coordinate
    assert torch.equal(weighted_coordinate_median(values, [1, 1, 1, 4]).float(), torch.tensor([100.0, -5.0]))
    # exactly half: the mean of the values either side (1 + 3 of 6 on the left of 3, in both coordinates)
    assert torch.equal(weighted_coordinate_median(values, [1, 0, 2, 3]).float(), torch.tensor([51.5, 2.5]))
    with pytest.raises(ValueError, match="one non-negative weight per tensor"):
        weighted_coordinate_median(values, [1, 1])
    with pytest.raises(ValueError, match="positive sum"):
        weighted_coordinate_median(values, [0, 0, 0, 0])


def test_weighted_median_follows_the_larger_sites_where_the_plain_median_does_not():
    # Prepare: three small sites at 0, two large ones at 1 (more than half the patients)
    small = [_update(f"s{i}", {"head.bias": torch.zeros(3)}, n=10) for i in range(3)]
    large = [_update(f"l{i}", {"head.bias": torch.ones(3)}, n=40) for i in range(2)]

    # Execute
    plain = Median().combine(small + large)
    weighted = Median(weighted=True).combine(small + large)

    # Assert
    assert torch.equal(plain["head.bias"].float(), torch.zeros(3))
    assert torch.equal(weighted["head.bias"].float(), torch.ones(3))


def test_krum_scores_by_hand():
    vectors = [torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([100.0])]

    scores = krum_scores(vectors, n_byzantine=1)  # n - f - 2 = 1 nearest neighbour

    assert scores.tolist() == [1.0, 1.0, 1.0, 98.0**2]


def test_norm_clipping_by_hand():
    assert torch.allclose(clip_to_norm({"a": torch.tensor([3.0]), "b": torch.tensor([4.0])}, 1.0)["a"], torch.tensor([0.6]))
    assert torch.equal(clip_to_norm({"a": torch.tensor([0.3, 0.4])}, 1.0)["a"], torch.tensor([0.3, 0.4]))


@pytest.mark.parametrize("name", ["fedavg", "median", "trimmed_mean", "krum", "norm_bounding"])
def test_each_strategy_config_composes_and_builds(name):
    cfg = compose_config([f"federation={name}"])
    reference = compose_config(["federation=fedavg"])

    strategy = hydra.utils.instantiate(cfg.federation.strategy)

    assert isinstance(strategy, Strategy)
    assert set(cfg.federation) == set(reference.federation)
