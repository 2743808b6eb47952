"""One grey-level image per patient carrying a faint, disease-specific pattern.

Each disease has a fixed pattern of a few Gaussian blobs; a patient's image is that
pattern scaled by the site's ``image_signal`` (scanners and protocols differ), moved
by a small random shift, under Gaussian noise. A 2D site writes 8-bit PNGs; a 3D
site writes uncompressed NIfTI (gzip output is not byte-reproducible across zlib
versions) with an identity affine.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

MAX_SHIFT = 2  # voxels, each axis
PNG_CENTRE, PNG_SCALE = 128.0, 60.0  # intensity mapping from pattern units to uint8


def disease_pattern(rng: np.random.Generator, dims: int, size: int, n_blobs: int = 3) -> np.ndarray:
    """A sum of blobs at disease-specific positions; half the blobs bright, half dark."""
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float64)] * dims, indexing="ij"), axis=-1)
    pattern = np.zeros((size,) * dims)
    for _ in range(n_blobs):
        centre = rng.uniform(0.2, 0.8, size=dims) * size
        sigma = rng.uniform(0.05, 0.11) * size
        amplitude = rng.uniform(0.6, 1.0) * rng.choice([-1.0, 1.0])
        pattern += amplitude * np.exp(-((grid - centre) ** 2).sum(-1) / (2 * sigma**2))
    return pattern


def patient_image(pattern: np.ndarray, signal: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    shift = tuple(int(s) for s in rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=pattern.ndim))
    moved = np.roll(pattern, shift, axis=tuple(range(pattern.ndim)))
    return signal * moved + rng.normal(0.0, noise, size=pattern.shape)


def write_image(folder: Path, patient_id: str, image: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if image.ndim == 2:
        path = folder / f"{patient_id}.png"
        grey = np.clip(np.rint(PNG_CENTRE + PNG_SCALE * image), 0, 255).astype(np.uint8)
        Image.fromarray(grey).save(path, format="PNG")  # uint8 2D arrays become mode "L"
        return path
    path = folder / f"{patient_id}.nii"
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine=np.eye(4)), path)
    return path
