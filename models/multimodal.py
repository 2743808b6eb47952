"""The zoo's model: one encoder per modality, a fusion module and a head (late fusion).

Encoders live in a ModuleDict sorted by modality name, so parameter names are the
same at every site, whichever modalities it holds: `encoders.<modality>.…`. The
federation layer uses that name component to aggregate each parameter over the
sites that trained it.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class MultimodalClassifier(nn.Module):
    def __init__(self, encoders: Mapping[str, nn.Module], fusion: nn.Module, head: nn.Module, embed_dim: int):
        super().__init__()
        self.modalities = sorted(encoders)
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.fusion = fusion
        self.head = head
        self.embed_dim = embed_dim

    @property
    def n_classes(self) -> int:
        return self.head.n_classes

    def forward(self, inputs: Mapping[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """inputs: modality -> batched tensor (may omit modalities absent from the batch); present: bool[B, M] in `self.modalities` order."""
        return self.head(self.fusion(self.embed(inputs, present), present))

    def embed(self, inputs: Mapping[str, torch.Tensor], present: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run each encoder on the rows where its modality is present only; other rows stay zero (and masked)."""
        batch = present.shape[0]
        embeddings = {}
        for column, modality in enumerate(self.modalities):
            rows = present[:, column]
            out = present.new_zeros(batch, self.embed_dim, dtype=torch.float32)
            if modality in inputs and bool(rows.any()):
                encoded = self.encoders[modality](inputs[modality][rows])
                out = out.to(encoded.dtype).index_put((rows,), encoded)  # bf16 under mixed precision
            embeddings[modality] = out
        return embeddings


def parameter_modality(name: str, modalities: list[str] | tuple[str, ...]) -> str | None:
    """The modality a parameter belongs to (a name component equal to a modality), or None if shared by all."""
    for part in name.split("."):
        if part in modalities:
            return part
    return None
