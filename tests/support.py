"""Helpers several test modules share: composing the real config, and a tiny two-modality site.

Imported as `from support import ...` (pytest puts this folder on sys.path).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from monai.networks.nets import ResNet

from federation.site import Site
from modalities.site_data import SiteData
from models.encoders.imaging import ImageEncoder
from models.encoders.labs import LabEncoder
from models.fusion import MaskedMeanFusion
from models.heads import ClassificationHead
from models.lit_module import MultimodalLitModule
from models.multimodal import MultimodalClassifier

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EMBED, N_CLASSES, SIZE = 8, 3, (8, 8)


def compose_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "train"):
    """The project's own Hydra config, composed as the scripts compose it."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def tiny_module() -> MultimodalLitModule:
    """Imaging + labs model small enough to train in a test (seeded: the same weights every call)."""
    torch.manual_seed(0)
    backbone = ResNet("basic", [1, 1, 1, 1], [4, 4, 4, 4], spatial_dims=2, n_input_channels=1, feed_forward=False, no_max_pool=True)
    encoders = {"imaging": ImageEncoder(backbone, SIZE, embed_dim=EMBED), "labs": LabEncoder(["a", "b"], embed_dim=EMBED)}
    model = MultimodalClassifier(encoders, MaskedMeanFusion(["imaging", "labs"], EMBED), ClassificationHead(N_CLASSES, EMBED), EMBED)
    return MultimodalLitModule(model, optimizer=partial(torch.optim.SGD, lr=0.1))


def tiny_items(n: int, with_imaging: bool, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        inputs = {"labs": torch.randn(4, generator=g)}
        if with_imaging:
            inputs["imaging"] = torch.randn(1, *SIZE, generator=g)
        items.append({"patient_id": f"p{i}", "label": i % N_CLASSES, "inputs": inputs})
    return items


class _Stack:
    """A reader's collate for fixed-shape tensors."""

    @staticmethod
    def collate(items: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(items)


def tiny_site(name: str, n: int, with_imaging: bool, seed: int) -> Site:
    """An in-memory site for the tiny model, batched by the project's own collate."""
    from modalities.dataset import collate_batch

    modalities = ("imaging", "labs") if with_imaging else ("labs",)
    data = SiteData(name, modalities, {"train": tiny_items(n, with_imaging, seed), "val": tiny_items(3, with_imaging, seed + 1)})
    collate = partial(collate_batch, modalities=("imaging", "labs"), readers={"imaging": _Stack, "labs": _Stack})
    trainer = partial(L.Trainer, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return Site(data, collate, batch_size=4, make_trainer=trainer)
