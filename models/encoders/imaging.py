"""Imaging encoder: any MONAI network used as a feature extractor, plus a projection to embed_dim.

The backbone comes from config (`_target_: monai.networks.nets.ResNet`,
`feed_forward: false`, or a DenseNet), so one class serves 2D and 3D through
MONAI's `spatial_dims`. Its output width is found with one probe forward pass,
so any backbone that maps [B, C, *spatial] to [B, features] fits.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ImageEncoder(nn.Module):
    def __init__(self, backbone: nn.Module, spatial_size: Sequence[int], in_channels: int = 1, embed_dim: int = 64):
        super().__init__()
        self.backbone = backbone
        self.projection = nn.Linear(self._feature_width(backbone, in_channels, spatial_size), embed_dim)

    @staticmethod
    def _feature_width(backbone: nn.Module, in_channels: int, spatial_size: Sequence[int]) -> int:
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():
            features = backbone(torch.zeros(2, in_channels, *spatial_size))
        backbone.train(was_training)
        return int(features.reshape(2, -1).shape[1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, C, *spatial_size]."""
        return self.projection(self.backbone(images).flatten(1))
