"""Assemble a MultimodalClassifier from Hydra config for the modalities a consortium holds."""
from __future__ import annotations

from collections.abc import Sequence

from hydra.utils import instantiate
from omegaconf import DictConfig

from models.multimodal import MultimodalClassifier


def build_model(cfg: DictConfig, modalities: Sequence[str], n_classes: int) -> MultimodalClassifier:
    """cfg is the `model` group: `encoders.<modality>`, `fusion`, `head` (each with `_target_`) and `embed_dim`."""
    missing = [m for m in modalities if m not in cfg.encoders]
    if missing:
        raise ValueError(f"model.encoders has no encoder for modalities {missing}; configured: {sorted(cfg.encoders)}")
    encoders = {m: instantiate(cfg.encoders[m]) for m in sorted(modalities)}
    fusion = instantiate(cfg.fusion, modalities=sorted(modalities))
    head = instantiate(cfg.head, n_classes=n_classes)
    return MultimodalClassifier(encoders, fusion, head, embed_dim=cfg.embed_dim)
