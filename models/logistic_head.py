"""A head whose class 0 is the reference category: logits = [0, W x + b] (multinomial logistic regression).

With two classes, softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)] and the
cross-entropy is exactly the binary cross-entropy of one logit z: the
parametrisation of FLamby's `Linear(n, 1)` + sigmoid + BCELoss, with the same
gradients and learning-rate scale (a 2-logit softmax head would move
z = z1 - z0 twice as fast). Argmax of the logits is sigmoid(z) > 0.5.
"""
from __future__ import annotations

import torch
from torch import nn


class LogisticHead(nn.Module):
    def __init__(self, n_classes: int, embed_dim: int):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a logistic head needs at least 2 classes, got {n_classes}")
        self.n_classes = n_classes
        self.linear = nn.Linear(embed_dim, n_classes - 1)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        z = self.linear(fused)
        return torch.cat([z.new_zeros(z.shape[0], 1), z], dim=1)
