"""Assemble a MultimodalClassifier from Hydra config for the modalities a consortium holds."""
from __future__ import annotations

from collections.abc import Sequence

from hydra.utils import instantiate
from omegaconf import DictConfig

from models.multimodal import MultimodalClassifier


def build_model(cfg: DictConfig, modalities: Sequence[str], labels: Sequence[str]) -> MultimodalClassifier:
    """cfg is the `model` group: `encoders.<modality>`, `fusion`, `head` (each with `_target_`) and `embed_dim`.

    Heads that know diseases (KnowledgeHead) are bound to the label list and the model here.
    """
    missing = [m for m in modalities if m not in cfg.encoders]
    if missing:
        raise ValueError(f"model.encoders has no encoder for modalities {missing}; configured: {sorted(cfg.encoders)}")
    encoders = {m: instantiate(cfg.encoders[m]) for m in sorted(modalities)}
    fusion = instantiate(cfg.fusion, modalities=sorted(modalities))
    head = instantiate(cfg.head, n_classes=len(labels))
    model = MultimodalClassifier(encoders, fusion, head, embed_dim=cfg.embed_dim)
    if hasattr(head, "bind"):
        head.bind(model, list(labels))
    return model
