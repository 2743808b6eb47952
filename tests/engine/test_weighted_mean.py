"""FedAvg's streaming per-key mean equals the textbook weighted mean per key, and holds one update at a time."""

import gc
import weakref

import pytest
import torch

from federation.aggregate import weighted_mean_per_key


def _updates(n_sites: int, seed: int) -> list[tuple[dict[str, torch.Tensor], dict[str, int]]]:
    """Sites with different modality subsets (some keys missing) and sample counts, one zero-weight key."""
    g = torch.Generator().manual_seed(seed)
    updates = []
    for i in range(n_sites):
        deltas = {"shared.weight": torch.randn(7, 5, generator=g), "head.bias": torch.randn(3, generator=g) * 1e-3}
        if i % 2 == 0:
            deltas["imaging.conv"] = torch.randn(2, 3, 3, generator=g) * 100
        weights = {key: int(torch.randint(1, 200, (1,), generator=g)) for key in deltas}
        if i == 1:
            weights["head.bias"] = 0  # a key sent without weight is ignored by both
        updates.append((deltas, weights))
    return updates


def _textbook_mean(updates) -> dict[str, torch.Tensor]:
    """The definition, in float64: sum of weight x delta over the sites holding a key, over the sum of their weights."""
    keys = {key for deltas, weights in updates for key in deltas if weights[key] > 0}
    mean = {}
    for key in keys:
        held = [(deltas[key].double(), float(weights[key])) for deltas, weights in updates if key in deltas and weights[key] > 0]
        mean[key] = (sum(d * w for d, w in held) / sum(w for _, w in held)).float()
    return mean


@pytest.mark.parametrize("n_sites", [1, 2, 5, 100])
@pytest.mark.parametrize("accumulate", [torch.float32, torch.float64])
def test_equals_the_textbook_weighted_mean(n_sites, accumulate):
    # Prepare
    updates = _updates(n_sites, seed=n_sites)

    # Execute
    expected = _textbook_mean(updates)
    got = weighted_mean_per_key(iter(updates), accumulate=accumulate)

    # Assert
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key].dtype == expected[key].dtype == torch.float32
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6 * float(expected[key].abs().max()))


def test_does_not_change_the_updates():
    updates = _updates(4, seed=0)
    before = [{k: v.clone() for k, v in deltas.items()} for deltas, _ in updates]

    weighted_mean_per_key(updates)

    for (deltas, _), kept in zip(updates, before):
        assert all(torch.equal(deltas[k], kept[k]) for k in kept)


def test_half_precision_updates_are_summed_in_the_accumulator_dtype():
    big, small = torch.full((4,), 2048.0, dtype=torch.float16), torch.full((4,), 1.0, dtype=torch.float16)
    updates = [({"w": big}, {"w": 1}), ({"w": small}, {"w": 1})]

    mean = weighted_mean_per_key(updates)

    # 2048 + 1 is not representable in float16; a float16 running sum would give 1024.0
    assert torch.equal(mean["w"], torch.full((4,), 1024.5))


def test_a_generator_update_is_released_before_the_next_is_made():
    # Prepare: a generator that records which earlier updates are still alive when it makes the next
    alive_when_making = []
    refs = []

    def make(i: int) -> dict[str, torch.Tensor]:
        gc.collect()
        alive_when_making.append(sum(r() is not None for r in refs))
        tensor = torch.full((1000,), float(i))
        refs.append(weakref.ref(tensor))
        return {"w": tensor}

    def generate():
        for i in range(5):
            yield make(i), {"w": 1}  # no name here keeps the update alive

    # Execute
    mean = weighted_mean_per_key(generate())

    # Assert
    assert alive_when_making == [0] * 5
    assert torch.allclose(mean["w"], torch.full((1000,), 2.0))


def test_no_updates_give_no_keys():
    assert weighted_mean_per_key(iter([])) == {}
