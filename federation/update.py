"""What a site sends after local training: parameter deltas with per-parameter sample counts."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelUpdate:
    site: str
    round: int
    deltas: dict[str, torch.Tensor]
    """Local minus global, only for the parameters this site trained."""
    sample_counts: dict[str, int]
    """Per key: the training samples that informed it (e.g. only patients with imaging for the imaging encoder)."""
    n_samples: int
    metrics: dict[str, float] = field(default_factory=dict)
    control_deltas: dict[str, torch.Tensor] = field(default_factory=dict)
    """SCAFFOLD only: the change of the site's control variate, for the parameters it trained."""

    def norm(self) -> float:
        return float(torch.sqrt(sum((d.double() ** 2).sum() for d in self.deltas.values())))
