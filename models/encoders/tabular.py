"""Encoder for the `tabular` modality: a row's feature vector (see modalities.tables) -> embedding.

With no hidden layers and `identity: true` it is the identity, so that with
SingleModalityFusion and a linear head the whole model is exactly a logistic
regression on the features (FLamby's Fed-Heart-Disease baseline).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class TabularEncoder(nn.Module):
    def __init__(self, n_features: int, embed_dim: int, hidden_dims: Sequence[int] = (), identity: bool = False, dropout: float = 0.0):
        """`identity`: pass features through unchanged (needs embed_dim == n_features and no hidden layers);
        else a linear map to `embed_dim`, or an MLP through `hidden_dims` first."""
        super().__init__()
        hidden_dims = list(hidden_dims or [])
        if identity:
            if hidden_dims or embed_dim != n_features:
                raise ValueError(f"an identity tabular encoder needs embed_dim == n_features ({embed_dim} != {n_features}) and no hidden_dims")
            self.net: nn.Module = nn.Identity()
            return
        layers: list[nn.Module] = []
        width = n_features
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, embed_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: [B, n_features] float."""
        return self.net(features)
