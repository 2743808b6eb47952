"""Every encoder maps its modality's batch to [B, embed_dim]."""
import pytest
import torch
from monai.networks.nets import DenseNet, ResNet

from modalities.hpo import load_hpo_index
from models.encoders.imaging import ImageEncoder
from models.encoders.labs import LabEncoder
from models.encoders.notes import TextEncoder
from models.encoders.phenotypes import HpoSetEncoder

EMBED = 16
TINY_BERT = dict(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("arch", ["resnet", "densenet"])
def test_image_encoder_shapes_2d_and_3d(spatial_dims, arch):
    size = (16,) * spatial_dims
    if arch == "resnet":
        backbone = ResNet("basic", [1, 1, 1, 1], [4, 8, 8, 8], spatial_dims=spatial_dims, n_input_channels=1, feed_forward=False, no_max_pool=True)
    else:
        backbone = DenseNet(spatial_dims, 1, out_channels=12, init_features=4, growth_rate=4, block_config=(1, 1))
    encoder = ImageEncoder(backbone, spatial_size=size, embed_dim=EMBED)

    out = encoder(torch.randn(3, 1, *size))

    assert out.shape == (3, EMBED)


def test_hpo_encoder_related_terms_are_closer_than_unrelated():
    index = load_hpo_index()
    encoder = HpoSetEncoder(embed_dim=EMBED, term_dim=8, hidden_dim=8).eval()
    seizure, focal_seizure, cleft = (index.index_of(t) + 1 for t in ("HP:0001250", "HP:0007359", "HP:0000175"))

    with torch.no_grad():
        vectors = encoder._ontology_embedding(torch.tensor([seizure, focal_seizure, cleft]) - 1)

    shared = lambda a, b: len(set(index.ancestors(a - 1)) & set(index.ancestors(b - 1)))
    assert shared(seizure, focal_seizure) > shared(seizure, cleft)
    assert torch.dist(vectors[0], vectors[1]) < torch.dist(vectors[0], vectors[2])


def test_hpo_encoder_handles_padding_excluded_terms_and_empty_rows():
    index = load_hpo_index()
    encoder = HpoSetEncoder(embed_dim=EMBED, term_dim=8, hidden_dim=8).eval()
    seizure = index.index_of("HP:0001250") + 1
    batch = torch.tensor([[seizure, 0], [-seizure, 0], [0, 0]])

    out = encoder(batch)

    assert out.shape == (3, EMBED)
    assert not torch.allclose(out[0], out[1]), "observed and excluded must differ"


def test_text_encoder_frozen_backbone_is_not_trainable_and_cache_matches():
    encoder = TextEncoder(embed_dim=EMBED, tiny_config=TINY_BERT, freeze=True)
    ids = torch.tensor([[1, 5, 7, 0], [1, 9, 0, 0]])

    first = encoder(ids)
    second = encoder(ids)

    assert first.shape == (2, EMBED)
    assert torch.allclose(first, second)
    assert not any(p.requires_grad for p in encoder.backbone.parameters())
    assert all(p.requires_grad for p in encoder.projection.parameters())
    assert torch.allclose(encoder._run_backbone(ids), encoder._pooled(ids), atol=1e-5)


def test_text_encoder_padding_does_not_change_the_embedding():
    encoder = TextEncoder(embed_dim=EMBED, tiny_config=TINY_BERT, freeze=True, cache_embeddings=False)

    short, padded = encoder(torch.tensor([[1, 5, 7]])), encoder(torch.tensor([[1, 5, 7, 0, 0]]))

    assert torch.allclose(short, padded, atol=1e-5)


def test_text_encoder_loads_the_packaged_minilm_offline():
    encoder = TextEncoder(embed_dim=EMBED)

    assert encoder.backbone.config.hidden_size == 384
    assert encoder(torch.tensor([[101, 7877, 102]])).shape == (1, EMBED)


def test_lab_encoder_shape():
    assert LabEncoder(["a", "b", "c"], embed_dim=EMBED)(torch.zeros(4, 6)).shape == (4, EMBED)


def test_variant_encoder_ignores_padding_rows_and_handles_empty_sets():
    from modalities.variants import variant_columns
    from models.encoders.variants import VariantSetEncoder

    columns = variant_columns(("CADD", "REVEL"))
    encoder = VariantSetEncoder(embed_dim=EMBED, score_fields=("CADD", "REVEL")).eval()
    torch.manual_seed(0)
    variants = torch.zeros(3, 4, len(columns))
    variants[:, :2, columns.index("valid")] = 1
    variants[:, :2, columns.index("gene")] = torch.tensor([5.0, 9.0])
    variants[:, :2, columns.index("CADD")] = torch.tensor([30.0, 2.0])
    variants[2] = 0  # a patient whose VCF had no called variant
    padded_differently = variants.clone()
    padded_differently[0, 2:, columns.index("CADD")] = 99.0  # junk in padding rows must not matter

    out, out_junk = encoder(variants), encoder(padded_differently)

    assert out.shape == (3, EMBED)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0], out_junk[0], atol=1e-6)
