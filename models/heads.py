"""Heads mapping the fused patient embedding to logits over the diagnosis label space."""
from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    def __init__(self, n_classes: int, embed_dim: int = 64, hidden_dim: int | None = None, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden_dim:
            layers += [nn.Linear(embed_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden_dim or embed_dim, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        return self.net(fused)
