"""One grey-level image per patient (`images/<patient_id>.png` or `.nii[.gz]`) through MONAI.

Images are loaded channel-first with MONAI's `LoadImage`, checked against the
configured dimensionality and channel count, scaled to [0, 1] and resized to a
fixed `spatial_size`, so every site feeds the encoder the same shape. Spatial axes
follow MONAI's convention (a PNG of width W and height H loads as [1, W, H]).
An RGB(A) image is converted to grey (ITU-R BT.601 luma, alpha dropped) when one
channel is configured (counted as `rgb_to_grey` in `stats`); any other channel
mismatch is an error, and so is a NaN or infinite pixel.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImage, Resize, ScaleIntensity
from torch import Tensor

from modalities.base import DataError
from modalities.patient_files import patient_files
from modalities.phenopacket_io import PatientRecord

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_LUMA = (0.299, 0.587, 0.114)


class _CheckShape:
    """Raises a DataError (file, field) when a loaded channel-first image has the wrong layout."""

    def __init__(self, spatial_dims: int, channels: int):
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.rgb_to_grey = 0

    def __call__(self, image: Tensor) -> Tensor:
        path = getattr(image, "meta", {}).get("filename_or_obj", "<image>")
        if image.is_floating_point() and not bool(torch.isfinite(image).all()):
            n = int((~torch.isfinite(image)).sum())
            raise DataError(path, f"{n} non-finite pixel values (NaN or inf)", field="pixels")
        found_dims = image.ndim - 1
        if found_dims != self.spatial_dims:
            raise DataError(
                path,
                f"{found_dims}D image (shape {tuple(image.shape[1:])}), expected {self.spatial_dims}D",
                field="spatial_dims",
            )
        if image.shape[0] != self.channels:
            if self.channels == 1 and self.spatial_dims == 2 and image.shape[0] in (3, 4):
                weights = torch.tensor(_LUMA, dtype=image.dtype).view(3, *([1] * self.spatial_dims))
                self.rgb_to_grey += 1
                return (image[:3] * weights).sum(dim=0, keepdim=True)
            raise DataError(path, f"{image.shape[0]} channels, expected {self.channels}", field="channels")
        return image


class ImageReader:
    def __init__(
        self,
        dir: str = "images",
        spatial_dims: int = 2,
        spatial_size: Sequence[int] = (32, 32),
        channels: int = 1,
    ):
        spatial_size = tuple(int(s) for s in spatial_size)
        if spatial_dims not in (2, 3) or len(spatial_size) != spatial_dims:
            raise ValueError(f"spatial_dims must be 2 or 3 and match spatial_size, got {spatial_dims}, {spatial_size}")
        self.dir = dir
        self.spatial_dims = int(spatial_dims)
        self.spatial_size = spatial_size
        self.channels = int(channels)
        self._check = _CheckShape(self.spatial_dims, self.channels)
        self.transform = Compose(
            [
                LoadImage(image_only=True, ensure_channel_first=True),
                self._check,
                ScaleIntensity(),
                Resize(self.spatial_size),
            ]
        )
        self.stats: Counter[str] = Counter()

    def load(self, path: Path, patient_id: str | None = None) -> Tensor:
        """One image as a float tensor [channels, *spatial_size]."""
        try:
            image = self.transform(str(path))
        except Exception as err:
            cause = _data_error_in(err)
            if cause is not None:
                raise DataError(path, cause.reason, record=patient_id, field=cause.field) from err
            raise DataError(path, f"cannot read image: {err.__cause__ or err}", record=patient_id, field="image") from err
        if isinstance(image, MetaTensor):  # plain tensors collate and pickle without MONAI's metadata
            image = image.as_tensor()
        return image.float().contiguous()

    def read_site(self, site_dir: Path, records: list[PatientRecord]) -> dict[str, Tensor]:
        self.stats = Counter()
        known = {r.patient_id for r in records}
        files = patient_files(Path(site_dir) / self.dir, IMAGE_SUFFIXES, known, "image", self.stats)
        converted_before = self._check.rgb_to_grey
        out = {pid: self.load(path, pid) for pid, path in files.items()}
        if self._check.rgb_to_grey > converted_before:
            self.stats["rgb_to_grey"] = self._check.rgb_to_grey - converted_before
        return out

    def collate(self, items: list[Tensor]) -> Tensor:
        if not items:
            raise ValueError("cannot collate an empty batch")
        return torch.stack(items)


def _data_error_in(err: BaseException | None) -> DataError | None:
    """MONAI's Compose wraps errors raised in a transform; find our own one in the chain."""
    while err is not None:
        if isinstance(err, DataError):
            return err
        err = err.__cause__ or err.__context__
    return None
