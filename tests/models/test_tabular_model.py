"""Identity encoder + single-modality fusion + logistic head is exactly a logistic regression."""
import pytest
import torch

from models.encoders.tabular import TabularEncoder
from models.fusion import SingleModalityFusion
from models.logistic_head import LogisticHead
from models.multimodal import MultimodalClassifier


def test_identity_encoder_single_fusion_and_logistic_head_compute_w_x_plus_b():
    # Prepare
    torch.manual_seed(0)
    model = MultimodalClassifier({"tabular": TabularEncoder(5, 5, identity=True)}, SingleModalityFusion(["tabular"]), LogisticHead(2, 5), embed_dim=5)
    w = torch.randn(1, 5)
    b = torch.randn(1)
    with torch.no_grad():
        model.head.linear.weight.copy_(w)
        model.head.linear.bias.copy_(b)
    x = torch.randn(7, 5)

    # Execute
    logits = model({"tabular": x}, torch.ones(7, 1, dtype=torch.bool))

    # Assert: logits [0, w.x + b]; softmax is the sigmoid; the only parameters are w and b
    z = x @ w.T + b
    assert torch.allclose(logits, torch.cat([torch.zeros(7, 1), z], dim=1), atol=1e-6)
    assert torch.allclose(logits.softmax(1)[:, 1:], torch.sigmoid(z), atol=1e-6)
    assert sorted(n for n, _ in model.named_parameters()) == ["head.linear.bias", "head.linear.weight"]
    labels = torch.randint(0, 2, (7,))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z.squeeze(1), labels.float())
    assert torch.allclose(torch.nn.functional.cross_entropy(logits, labels), bce, atol=1e-6)


def test_tabular_encoder_is_linear_or_mlp_and_checks_identity_width():
    assert TabularEncoder(4, 8)(torch.randn(3, 4)).shape == (3, 8)
    assert TabularEncoder(4, 8, hidden_dims=[16, 16])(torch.randn(3, 4)).shape == (3, 8)
    with pytest.raises(ValueError, match="embed_dim == n_features"):
        TabularEncoder(4, 8, identity=True)


def test_single_modality_fusion_refuses_several_modalities():
    with pytest.raises(ValueError, match="exactly one modality"):
        SingleModalityFusion(["tabular", "labs"])
