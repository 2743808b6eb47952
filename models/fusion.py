"""Fusion of per-modality embeddings under a presence mask.

A missing modality is the normal case here (a rural clinic holds no exomes), so
every fusion takes the embeddings of all modalities plus `present: bool[B, M]`
and returns [B, embed_dim] whatever subset is present; a row with nothing
present gets a fixed output rather than an error.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MaskedMeanFusion(nn.Module):
    """Mean of the present modalities' embeddings, then a linear mix."""

    def __init__(self, modalities: Sequence[str], embed_dim: int = 64):
        super().__init__()
        self.modalities = list(modalities)
        self.out = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, embed_dim), nn.GELU())

    def forward(self, embeddings: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        stacked = _stack(embeddings, self.modalities)
        weights = present.unsqueeze(-1).to(stacked.dtype)
        mean = (stacked * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.out(mean)


class AttentionFusion(nn.Module):
    """A learned summary token attends over the present modality tokens (transformer encoder, padding mask)."""

    def __init__(self, modalities: Sequence[str], embed_dim: int = 64, n_heads: int = 4, n_layers: int = 1, dropout: float = 0.1):
        super().__init__()
        self.modalities = list(modalities)
        self.modality_embedding = nn.ParameterDict({m: nn.Parameter(torch.randn(embed_dim) * 0.02) for m in self.modalities})
        self.summary_token = nn.Parameter(torch.zeros(embed_dim))
        layer = nn.TransformerEncoderLayer(embed_dim, n_heads, 2 * embed_dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, embeddings: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        tokens = _stack(embeddings, self.modalities) + torch.stack([self.modality_embedding[m] for m in self.modalities])
        summary = self.summary_token.expand(tokens.shape[0], 1, -1)
        sequence = torch.cat([summary, tokens], dim=1)
        padding = torch.cat([present.new_zeros(present.shape[0], 1), ~present], dim=1)
        return self.norm(self.encoder(sequence, src_key_padding_mask=padding)[:, 0])


class GatedFusion(nn.Module):
    """Each present modality scores its own relevance; a softmax over present ones weights the sum."""

    def __init__(self, modalities: Sequence[str], embed_dim: int = 64):
        super().__init__()
        self.modalities = list(modalities)
        self.gates = nn.ModuleDict({m: nn.Linear(embed_dim, 1) for m in self.modalities})
        self.out = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, embed_dim), nn.GELU())

    def forward(self, embeddings: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        stacked = _stack(embeddings, self.modalities)
        scores = torch.cat([self.gates[m](embeddings[m]) for m in self.modalities], dim=1)
        weights = torch.softmax(scores.masked_fill(~present, float("-inf")), dim=1).nan_to_num(0.0)
        return self.out((weights.unsqueeze(-1) * stacked).sum(1))


class SingleModalityFusion(nn.Module):
    """The embedding of the one configured modality, unchanged (no parameters): for single-modality models such as a logistic regression on a table."""

    def __init__(self, modalities: Sequence[str], embed_dim: int | None = None):
        super().__init__()
        if len(modalities) != 1:
            raise ValueError(f"SingleModalityFusion takes exactly one modality, got {list(modalities)}")
        self.modalities = list(modalities)

    def forward(self, embeddings: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return embeddings[self.modalities[0]]


def _stack(embeddings: dict[str, torch.Tensor], modalities: list[str]) -> torch.Tensor:
    return torch.stack([embeddings[m] for m in modalities], dim=1)
