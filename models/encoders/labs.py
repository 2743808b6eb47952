"""MLP over standardised lab values and their missing indicators (see modalities.labs)."""
from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn


class LabEncoder(nn.Module):
    def __init__(self, analytes: Collection[str], embed_dim: int = 64, hidden_dim: int = 64, dropout: float = 0.1):
        """`analytes`: the consortium's analyte list (or the analytes config mapping); its size fixes the input width."""
        super().__init__()
        n_analytes = len(analytes)
        self.net = nn.Sequential(
            nn.Linear(2 * n_analytes, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, embed_dim)
        )

    def forward(self, labs: torch.Tensor) -> torch.Tensor:
        """labs: [B, 2A]: A standardised values, then A missing indicators."""
        return self.net(labs)
