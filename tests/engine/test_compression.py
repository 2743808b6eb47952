"""Update compression: each codec round-trips within its error bound and shrinks what travels."""

import pytest
import torch
from safetensors.torch import load, save
from support import tiny_module, tiny_site

from federation.compression import CompressingSite, Int8, TopK, decode_update, encode_update, make_codec, wire_bytes, with_compression
from federation.state import get_state, trainable_keys
from federation.strategies.fedavg import FedAvg


def _deltas(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"encoders.imaging.conv.weight": torch.randn(16, 8, 3, 3, generator=g) * 1e-2, "head.bias": torch.randn(5, generator=g) - 3.0}


def test_no_compression_is_exact_and_half_precision_is_within_its_rounding():
    deltas = _deltas()

    exact = decode_update(encode_update(deltas, make_codec("none")), make_codec("none"), deltas)
    half = decode_update(encode_update(deltas, make_codec("fp16")), make_codec("fp16"), deltas)

    assert all(torch.equal(exact[k], deltas[k]) for k in deltas)
    for key, delta in deltas.items():
        assert half[key].dtype == delta.dtype and half[key].shape == delta.shape
        torch.testing.assert_close(half[key], delta, rtol=2**-11, atol=2**-25)  # half an ulp; subnormals: half their spacing


def test_int8_error_is_at_most_half_a_quantisation_step():
    deltas = _deltas(1)

    decoded = decode_update(encode_update(deltas, Int8()), Int8(), deltas)

    for key, delta in deltas.items():
        step = (max(float(delta.max()), 0.0) - min(float(delta.min()), 0.0)) / 255
        assert float((decoded[key] - delta).abs().max()) <= step / 2 + 1e-7
    assert torch.all(decode_update(encode_update({"z": torch.zeros(4)}, Int8()), Int8(), {"z": torch.zeros(4)})["z"] == 0)


def test_topk_keeps_exactly_the_largest_magnitudes():
    tensor = torch.tensor([[0.1, -5.0, 0.2], [3.0, 0.0, -0.3]])

    decoded = decode_update(encode_update({"w": tensor}, TopK(fraction=2 / 6)), TopK(fraction=2 / 6), {"w": tensor})

    assert torch.equal(decoded["w"], torch.tensor([[0.0, -5.0, 0.0], [3.0, 0.0, 0.0]]))


@pytest.mark.parametrize("kind, options, at_most", [("fp16", {}, 0.51), ("int8", {}, 0.27), ("topk", {"fraction": 0.01}, 0.03)])
def test_compressed_payload_is_smaller_on_the_wire(kind, options, at_most):
    deltas = {"w": torch.randn(256, 256), "b": torch.randn(256)}

    plain = wire_bytes(encode_update(deltas, make_codec("none")))
    compressed = wire_bytes(encode_update(deltas, make_codec(kind, **options)))

    assert compressed <= at_most * plain


def test_the_wire_payload_survives_serialisation():
    deltas = _deltas(2)
    codec = Int8()
    wire = encode_update(deltas, codec)

    received = load(save(wire))
    decoded = decode_update(received, codec, deltas)

    assert all(torch.equal(decoded[k], decode_update(wire, codec, deltas)[k]) for k in deltas)


def test_decoding_refuses_keys_the_global_state_lacks():
    wire = encode_update({"unknown": torch.ones(3)}, make_codec("fp16"))

    with pytest.raises(KeyError, match="unknown"):
        decode_update(wire, make_codec("fp16"), {"known": torch.ones(3)})


def test_unknown_codec_and_bad_fraction_are_refused():
    with pytest.raises(ValueError, match="unknown update compression"):
        make_codec("zip")
    with pytest.raises(ValueError, match="fraction"):
        TopK(fraction=0.0)


def test_error_feedback_sends_what_the_last_round_dropped():
    # Prepare: a site whose local training always proposes the same delta
    class FixedSite:
        name = "fixed"

        def train(self, *args, **kwargs):
            from federation.update import ModelUpdate

            return ModelUpdate("fixed", 1, {"w": torch.tensor([4.0, 1.0, 0.5])}, {"w": 1}, 1)

    site = CompressingSite(FixedSite(), TopK(fraction=1 / 3))

    # Execute
    sent = [site.train().deltas["w"] for _ in range(3)]

    # Assert: the small coordinates are delayed, not lost
    assert torch.equal(sent[0], torch.tensor([4.0, 0.0, 0.0]))
    assert torch.equal(sum(sent) + site.residual["w"], 3 * torch.tensor([4.0, 1.0, 0.5]))
    assert len(site.sent_bytes) == 3 and site.name == "fixed"


def test_a_compressing_site_takes_part_in_a_real_round():
    # Prepare
    module = tiny_module()
    state = get_state(module, trainable_keys(module))
    site = CompressingSite(tiny_site("a", 8, True, 1), make_codec("int8"))

    # Execute
    update = site.train(module, state, {"max_epochs": 1}, round_=1, seed=1)
    new_state = FedAvg().aggregate(state, [update])

    # Assert
    assert update.deltas.keys() <= state.keys()
    assert all(update.deltas[k].dtype == state[k].dtype for k in update.deltas)
    assert any(not torch.equal(new_state[k], state[k]) for k in update.deltas)
    assert len(site.sent_bytes) == 1


def test_config_wraps_every_site_with_its_own_codec_state_or_none():
    sites = [tiny_site("a", 4, True, 1), tiny_site("b", 4, False, 2)]

    wrapped = with_compression(sites, {"kind": "topk", "fraction": 0.5, "error_feedback": False})

    assert [s.name for s in wrapped] == ["a", "b"]
    assert all(isinstance(s, CompressingSite) and s.codec.fraction == 0.5 and not s.error_feedback for s in wrapped)
    assert wrapped[0].sent_bytes is not wrapped[1].sent_bytes
    assert with_compression(sites, None) == sites
