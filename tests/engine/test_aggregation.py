"""Modality-aware aggregation: each parameter is averaged over the sites that trained it."""

import pytest
import torch
from support import EMBED, N_CLASSES, tiny_module, tiny_site

from federation.aggregate import weighted_mean_per_key
from federation.state import get_state, set_state, trainable_keys
from federation.strategies.fedavg import FedAvg
from federation.update import ModelUpdate


def test_imaging_weights_come_from_the_only_imaging_site_and_shared_weights_are_averaged():
    # Prepare
    module = tiny_module()
    global_state = get_state(module, trainable_keys(module))
    with_images, without_images = tiny_site("a", 8, True, 1), tiny_site("b", 12, False, 2)

    # Execute
    update_a = with_images.train(module, global_state, {"max_epochs": 1}, round_=1, seed=1)
    update_b = without_images.train(module, global_state, {"max_epochs": 1}, round_=1, seed=2)
    new_state = FedAvg().aggregate(global_state, [update_a, update_b])

    # Assert
    imaging_keys = [k for k in global_state if k.startswith("model.encoders.imaging.")]
    assert imaging_keys and all(k not in update_b.deltas for k in imaging_keys)
    for key in imaging_keys:
        assert torch.allclose(new_state[key], global_state[key] + update_a.deltas[key], atol=1e-6)
    head = "model.head.net.1.weight"
    expected = global_state[head] + (8 * update_a.deltas[head] + 12 * update_b.deltas[head]) / 20
    assert torch.allclose(new_state[head], expected, atol=1e-6)
    assert not torch.allclose(update_a.deltas[head], update_b.deltas[head])
    assert update_a.sample_counts[imaging_keys[0]] == 8 and update_b.sample_counts[head] == 12


def test_frozen_parameters_never_travel():
    module = tiny_module()
    module.model.encoders["labs"].requires_grad_(False)

    keys = trainable_keys(module)

    assert not any(k.startswith("model.encoders.labs.") for k in keys)
    assert any(k.startswith("model.encoders.imaging.") for k in keys)


def test_weighted_mean_uses_only_the_updates_that_contain_a_key():
    updates = [
        ({"shared": torch.tensor([1.0]), "img": torch.tensor([4.0])}, {"shared": 1, "img": 1}),
        ({"shared": torch.tensor([3.0])}, {"shared": 3}),
    ]

    mean = weighted_mean_per_key(updates)

    assert torch.allclose(mean["shared"], torch.tensor([2.5]))
    assert torch.allclose(mean["img"], torch.tensor([4.0]))


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"model.head.net.1.weight": torch.full((N_CLASSES, EMBED), float("nan"))}, "NaN"),
        ({"model.head.net.1.weight": torch.zeros(2, 2)}, "shape"),
        ({"not.a.parameter": torch.zeros(1)}, "unknown parameter"),
    ],
)
def test_fedavg_refuses_broken_updates(bad, message):
    module = tiny_module()
    state = get_state(module, trainable_keys(module))
    update = ModelUpdate("evil", 1, bad, {k: 1 for k in bad}, 1)

    with pytest.raises(ValueError, match=message):
        FedAvg().aggregate(state, [update])


def test_set_state_round_trips_and_rejects_unknown_keys():
    module = tiny_module()
    state = {k: torch.zeros_like(v) for k, v in get_state(module, trainable_keys(module)).items()}

    set_state(module, state)

    assert all(torch.count_nonzero(v) == 0 for v in get_state(module, list(state)).values())
    with pytest.raises(KeyError):
        set_state(module, {"nope": torch.zeros(1)})
