"""One site's loaded data, as the federation layer sees it."""
from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset


@dataclass
class SiteData:
    """A site's datasets (train/val/test) and the modalities it holds."""

    name: str
    modalities: tuple[str, ...]
    splits: dict[str, Dataset]
