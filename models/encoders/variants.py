"""Set encoder over a patient's variants (from VCF, via modalities.variants).

Each variant row carries categorical features (gene, consequence, impact) and
numeric ones (zygosity, allele frequency, in-silico scores with missing
indicators). A patient has tens of variants of which usually one matters, so
the set is pooled with learned attention rather than a plain mean.
"""
from __future__ import annotations

import torch
from torch import nn

from modalities import variants as variant_format


class VariantSetEncoder(nn.Module):
    def __init__(
        self,
        embed_dim: int = 64,
        score_fields: list[str] | tuple[str, ...] = ("CADD", "REVEL"),
        gene_dim: int = 32,
        hidden_dim: int = 64,
        dropout: float = 0.1,
    ):
        super().__init__()
        columns = variant_format.variant_columns(tuple(score_fields))
        self.column = {name: i for i, name in enumerate(columns)}
        self.numeric_columns = [i for name, i in self.column.items() if name not in ("valid", "gene", "consequence", "impact")]
        self.gene = nn.Embedding(variant_format.N_GENES, gene_dim, padding_idx=0)
        self.consequence = nn.Embedding(variant_format.N_CONSEQUENCES, 8, padding_idx=0)
        self.impact = nn.Embedding(variant_format.N_IMPACTS, 4, padding_idx=0)
        in_dim = gene_dim + 8 + 4 + len(self.numeric_columns)
        self.phi = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, hidden_dim), nn.GELU())
        self.attention = nn.Linear(hidden_dim, 1)
        self.rho = nn.Linear(hidden_dim, embed_dim)

    def forward(self, variants: torch.Tensor) -> torch.Tensor:
        """variants: [B, V, F] in the column layout of modalities.variants; rows with valid == 0 are padding."""
        valid = variants[..., self.column["valid"]] > 0
        features = torch.cat(
            [
                self.gene(variants[..., self.column["gene"]].long()),
                self.consequence(variants[..., self.column["consequence"]].long()),
                self.impact(variants[..., self.column["impact"]].long()),
                variants[..., self.numeric_columns],
            ],
            dim=-1,
        )
        hidden = self.phi(features)
        scores = self.attention(hidden).squeeze(-1).masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # rows with no variant at all
        return self.rho((weights.unsqueeze(-1) * hidden).sum(dim=1))
