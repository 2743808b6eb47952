"""Fusion output shape never depends on which modalities are present, and absent ones have no influence."""
import itertools

import pytest
import torch

from models.fusion import AttentionFusion, GatedFusion, MaskedMeanFusion

MODALITIES = ["imaging", "labs", "notes", "phenotypes", "variants"]
EMBED = 16
FUSIONS = [MaskedMeanFusion, AttentionFusion, GatedFusion]
SUBSETS = [s for r in range(len(MODALITIES) + 1) for s in itertools.combinations(range(len(MODALITIES)), r)]


def _inputs(batch: int = 4):
    torch.manual_seed(0)
    return {m: torch.randn(batch, EMBED) for m in MODALITIES}


@pytest.mark.parametrize("fusion_cls", FUSIONS)
@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "+".join(MODALITIES[i] for i in s) or "none")
def test_every_subset_gives_the_same_shape_and_ignores_absent_modalities(fusion_cls, subset):
    fusion = fusion_cls(MODALITIES, embed_dim=EMBED).eval()
    embeddings = _inputs()
    present = torch.zeros(4, len(MODALITIES), dtype=torch.bool)
    present[:, list(subset)] = True

    out = fusion(embeddings, present)
    scrambled = {m: (e if i in subset else torch.randn_like(e) * 100) for i, (m, e) in enumerate(embeddings.items())}
    out_scrambled = fusion(scrambled, present)

    assert out.shape == (4, EMBED)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, out_scrambled, atol=1e-5)


@pytest.mark.parametrize("fusion_cls", FUSIONS)
def test_mixed_presence_within_a_batch_and_a_modality_absent_for_every_row(fusion_cls):
    fusion = fusion_cls(MODALITIES, embed_dim=EMBED).eval()
    present = torch.tensor(
        [[1, 0, 1, 1, 0], [0, 0, 0, 1, 0], [1, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool
    )  # labs absent for every row; last row has nothing

    out = fusion(_inputs(), present)

    assert out.shape == (4, EMBED)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("fusion_cls", FUSIONS)
def test_fusion_is_trainable_through_present_modalities(fusion_cls):
    fusion = fusion_cls(MODALITIES, embed_dim=EMBED)
    embeddings = {m: e.requires_grad_() for m, e in _inputs().items()}
    present = torch.zeros(4, len(MODALITIES), dtype=torch.bool)
    present[:, 3] = True

    fusion(embeddings, present).sum().backward()

    assert embeddings["phenotypes"].grad.abs().sum() > 0
    assert embeddings["imaging"].grad is None or embeddings["imaging"].grad.abs().sum() == 0
