"""One grey-level image per patient (`images/<patient_id>.png` or `.nii[.gz]`) through MONAI.

Images are loaded channel-first with MONAI's `LoadImage`, checked against the
configured dimensionality and channel count, scaled to [0, 1] and resized to a
fixed `spatial_size`, so every site feeds the encoder the same shape. Spatial axes
follow MONAI's convention (a PNG of width W and height H loads as [1, W, H]).
An RGB(A) image is converted to grey (ITU-R BT.601 luma, alpha dropped) when one
channel is configured (counted as `rgb_to_grey` in `stats`); any other channel
mismatch is an error, and so is a NaN or infinite pixel. An image with an axis
shorter than `min_size` pixels (default 4) is refused rather than stretched to
`spatial_size`: resizing a 1x1 image invents every pixel the model sees.

Each image read is also keyed by its decoded pixels (`pixel_key`: the array as
decoded and checked, before scaling and resizing, with its shape), kept per
patient in `pixel_keys` for the site last read, so the consortium can find the
same image at several sites whatever file format carried it (modalities/duplicates.py).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImage, Resize, ScaleIntensity
from torch import Tensor

from modalities.base import DataError, regular_file
from modalities.patient_files import patient_files
from modalities.phenopacket_io import PatientRecord
from modalities.quality import content_hash

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_LUMA = (0.299, 0.587, 0.114)
DEFAULT_MIN_SIZE = 4  # pixels per axis; smaller images are refused, not stretched


class _CheckShape:
    """Raises a DataError (file, field) when a loaded channel-first image has the wrong layout or is too small."""

    def __init__(self, spatial_dims: int, channels: int, min_size: int = 1):
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.min_size = min_size
        self.rgb_to_grey = 0

    def __call__(self, image: Tensor) -> Tensor:
        meta = getattr(image, "meta", {})
        path = meta.get("filename_or_obj", "<image>")
        if image.is_floating_point() and not bool(torch.isfinite(image).all()):
            n = int((~torch.isfinite(image)).sum())
            raise DataError(path, f"{n} non-finite pixel values (NaN or inf)", field="pixels")
        found_dims = image.ndim - 1
        if found_dims != self.spatial_dims:
            raise DataError(path, f"{_described(image, meta)}, expected {self.spatial_dims}D", field="spatial_dims")
        if image.shape[0] != self.channels:
            if self.channels == 1 and self.spatial_dims == 2 and image.shape[0] in (3, 4):
                image = (image[:3] * torch.tensor(_LUMA, dtype=image.dtype).view(3, *([1] * self.spatial_dims))).sum(dim=0, keepdim=True)
                self.rgb_to_grey += 1
            else:
                raise DataError(path, f"{image.shape[0]} channels ({_described(image, meta)}), expected {self.channels}", field="channels")
        check_min_size(path, tuple(image.shape[1:]), self.min_size)
        return image


def check_min_size(path: str | Path, shape: Sequence[int], min_size: int, record: str | None = None, field: str = "spatial_size") -> None:
    """Refuse an image with an axis shorter than `min_size` pixels: stretched to the model's size, it would be made up."""
    if min(shape) < min_size:
        size = "x".join(str(int(s)) for s in shape)
        raise DataError(path, f"image of {size} pixels, smaller than min_size {min_size} per axis (data.readers.imaging.min_size)", record=record, field=field)


def _described(image: Tensor, meta) -> str:
    """'2D image (shape (8, 8))', or for a file with more axes than it loaded with (a 4-D NIfTI), its own rank and shape."""
    stored = _stored_shape(meta)
    if stored is not None and len(stored) > image.ndim - 1:
        return f"{len(stored)}-D image (shape {stored})"
    return f"{image.ndim - 1}D image (shape {tuple(image.shape[1:])})"


def _stored_shape(meta) -> tuple[int, ...] | None:
    """The file's own axes, where the reader records them (a NIfTI header's `dim`)."""
    dim = meta.get("dim") if hasattr(meta, "get") else None
    try:
        return tuple(int(d) for d in dim[1 : int(dim[0]) + 1])
    except (TypeError, ValueError, IndexError):
        return None


class ImageReader:
    def __init__(
        self,
        dir: str = "images",
        spatial_dims: int = 2,
        spatial_size: Sequence[int] = (32, 32),
        channels: int = 1,
        min_size: int = DEFAULT_MIN_SIZE,
    ):
        spatial_size = tuple(int(s) for s in spatial_size)
        if spatial_dims not in (2, 3) or len(spatial_size) != spatial_dims:
            raise ValueError(f"spatial_dims must be 2 or 3 and match spatial_size, got {spatial_dims}, {spatial_size}")
        if int(min_size) < 1:
            raise ValueError(f"min_size must be >= 1 pixel, got {min_size}")
        self.dir = dir
        self.spatial_dims = int(spatial_dims)
        self.spatial_size = spatial_size
        self.channels = int(channels)
        self.min_size = int(min_size)
        self._check = _CheckShape(self.spatial_dims, self.channels, self.min_size)
        self.decode = Compose([LoadImage(image_only=True, ensure_channel_first=True), self._check])
        self.prepare = Compose([ScaleIntensity(), Resize(self.spatial_size)])
        self.stats: Counter[str] = Counter()
        self.pixel_keys: dict[str, str] = {}  # patient id -> pixel_key, for the site last read

    def load(self, path: Path, patient_id: str | None = None) -> Tensor:
        """One image as a float tensor [channels, *spatial_size]; its pixel key goes to `pixel_keys[patient_id]`."""
        regular_file(path, record=patient_id)  # a named pipe would block the read
        try:
            decoded = self.decode(str(path))
            if patient_id is not None:
                self.pixel_keys[patient_id] = pixel_key(decoded)
            image = self.prepare(decoded)
        except Exception as err:
            cause = _data_error_in(err)
            if cause is not None:
                raise DataError(path, cause.reason, record=patient_id, field=cause.field) from err
            raise DataError(path, f"cannot read image: {err.__cause__ or err}", record=patient_id, field="image") from err
        if isinstance(image, MetaTensor):  # plain tensors collate and pickle without MONAI's metadata
            image = image.as_tensor()
        return image.float().contiguous()

    def read_site(self, site_dir: Path, records: list[PatientRecord]) -> dict[str, Tensor]:
        self.stats, self.pixel_keys = Counter(), {}
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


def pixel_key(pixels) -> str:
    """A content hash of decoded pixels: their values as float32 and their shape, never the file's bytes.

    Two files hold the same image when they decode to the same pixels, whatever the
    container (PNG, NIfTI, DICOM, an archive's array) or its header and compression;
    the values are compared as float32 (as MONAI's LoadImage decodes every format), so
    8-bit and float copies of one image match too. Only compared, never reported.
    """
    if isinstance(pixels, Tensor):
        pixels = pixels.detach().cpu().numpy()
    return content_hash(np.ascontiguousarray(pixels, dtype=np.float32))


def _data_error_in(err: BaseException | None) -> DataError | None:
    """MONAI's Compose wraps errors raised in a transform; find our own one in the chain."""
    while err is not None:
        if isinstance(err, DataError):
            return err
        err = err.__cause__ or err.__context__
    return None
