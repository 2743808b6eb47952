import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from modalities.base import DataError
from modalities.imaging import ImageReader
from modalities.phenopacket_io import read_cohort


def write_png(path, shape=(20, 30), mode="L"):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=shape if mode == "L" else (*shape, 3), dtype=np.uint8)
    Image.fromarray(pixels, mode=mode).save(path)


def write_nifti(path, shape=(10, 12, 14)):
    volume = np.random.default_rng(0).random(shape, dtype=np.float32) * 1000
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)


WRITERS = {2: ("png", write_png, (20, 30)), 3: ("nii.gz", write_nifti, (10, 12, 14))}


@pytest.fixture
def site(tmp_path, write_phenopacket):
    for pid in ("p1", "p2"):
        write_phenopacket(tmp_path / "phenopackets", pid)
    (tmp_path / "images").mkdir()
    return tmp_path


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_images_are_scaled_resized_and_stacked(site, spatial_dims):
    suffix, write, shape = WRITERS[spatial_dims]
    for pid in ("p1", "p2"):
        write(site / "images" / f"{pid}.{suffix}", shape)
    spatial_size = (8,) * spatial_dims
    reader = ImageReader(spatial_dims=spatial_dims, spatial_size=spatial_size)

    out = reader.read_site(site, read_cohort(site / "phenopackets"))
    batch = reader.collate([out["p1"], out["p2"]])

    assert type(out["p1"]) is torch.Tensor and out["p1"].dtype == torch.float32
    assert out["p1"].shape == (1, *spatial_size)
    assert out["p1"].min() >= 0 and out["p1"].max() <= 1 and out["p1"].max() > 0.5
    assert batch.shape == (2, 1, *spatial_size)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_wrong_dimensionality(site, spatial_dims):
    other = 3 if spatial_dims == 2 else 2
    suffix, write, shape = WRITERS[other]
    write(site / "images" / f"p1.{suffix}", shape)
    reader = ImageReader(spatial_dims=spatial_dims, spatial_size=(8,) * spatial_dims)

    with pytest.raises(DataError) as err:
        reader.read_site(site, read_cohort(site / "phenopackets"))

    assert err.value.path.endswith(f"p1.{suffix}") and err.value.field == "spatial_dims" and err.value.record == "p1"


def test_rgb_png_becomes_grey(site):
    write_png(site / "images" / "p1.png", mode="RGB")

    out = ImageReader(spatial_size=(8, 8)).read_site(site, read_cohort(site / "phenopackets"))

    assert out["p1"].shape == (1, 8, 8)


def test_multichannel_volume_is_rejected(site):
    write_nifti(site / "images" / "p1.nii", shape=(6, 6, 6, 2))
    reader = ImageReader(spatial_dims=3, spatial_size=(4, 4, 4))

    with pytest.raises(DataError) as err:
        reader.read_site(site, read_cohort(site / "phenopackets"))

    assert err.value.path.endswith("p1.nii") and err.value.field == "channels"


def test_unreadable_image(site):
    (site / "images" / "p1.png").write_bytes(b"not a png")

    with pytest.raises(DataError) as err:
        ImageReader().read_site(site, read_cohort(site / "phenopackets"))

    assert err.value.path.endswith("p1.png") and err.value.field == "image"
