"""Image collections as sites: MedMNIST-style archives and folders of image files, their bad input, the BreastMNIST experiment."""
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from support import compose_config

from federation.driver.experiment import run_experiment
from modalities.base import DataError
from modalities.consortium import load_site_folders
from modalities.dataset import collate_batch
from modalities.image_sites import (
    load_image_folder_sites,
    load_npz_sites,
    npz_image_layout,
)

CONF = Path(__file__).resolve().parents[2] / "conf"
SIZES = {"train": 60, "val": 12, "test": 30}


def write_npz(path: Path, spatial=(12, 12), n_classes=3, column_labels=False, channels=None, **replace) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SIZES.items():
        labels = np.arange(n) % n_classes
        shape = (n, *spatial) + ((channels,) if channels else ())
        arrays[f"{split}_images"] = rng.integers(0, 255, size=shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8) if column_labels else labels
    arrays.update(replace)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def npz_cfg(path, **overrides):
    cfg = OmegaConf.load(CONF / "data" / "breastmnist.yaml")
    cfg.path = str(path)
    cfg = OmegaConf.merge(cfg, overrides)
    return OmegaConf.create({"data": cfg}).data  # interpolations like ${data.path} resolve inside the root


@pytest.mark.parametrize("spatial", [(12, 12), (6, 8, 10)], ids=["2d", "3d"])
@pytest.mark.parametrize("column_labels", [False, True], ids=["labels_1d", "labels_n1"])
def test_npz_archive_becomes_sites_keeping_its_splits(tmp_path, spatial, column_labels):
    path = write_npz(tmp_path / "a.npz", spatial=spatial, column_labels=column_labels)

    consortium = load_npz_sites(npz_cfg(path), seed=0)

    assert [s.name for s in consortium.sites] == ["site_0", "site_1", "site_2"]
    assert consortium.label_space.labels == ("0", "1", "2")
    assert consortium.modalities == ["imaging"]
    for split, n in SIZES.items():
        ids = [pid for site in consortium.sites for pid in site.splits[split].patient_ids]
        assert len(ids) == len(set(ids)) == n and all(pid.startswith(f"{split}_") for pid in ids)
    site = consortium.sites[0]
    item = site.splits["train"][0]
    assert item["inputs"]["imaging"].shape == (1, *spatial) and item["inputs"]["imaging"].dtype == torch.float32
    assert 0 <= item["inputs"]["imaging"].min() and item["inputs"]["imaging"].max() <= 1
    batch = collate_batch([site.splits["train"][i] for i in range(2)], ["imaging"], consortium.readers)
    assert batch["inputs"]["imaging"].shape == (2, 1, *spatial)


def test_npz_sites_are_the_same_for_a_seed(tmp_path):
    path = write_npz(tmp_path / "a.npz")

    first, again, other = (load_npz_sites(npz_cfg(path), seed=s) for s in (0, 0, 1))

    ids = lambda c: [site.splits["train"].patient_ids for site in c.sites]
    assert ids(first) == ids(again) != ids(other)


def test_npz_layout_and_size_come_from_the_file_or_config(tmp_path):
    rgb = write_npz(tmp_path / "rgb.npz", spatial=(10, 14), channels=3)

    assert npz_image_layout(rgb) == (2, (10, 14), 3)
    cfg = npz_cfg(rgb, image_size=[8, 8])
    assert cfg.readers.imaging.spatial_size == [8, 8]
    consortium = load_npz_sites(cfg, seed=0)
    assert consortium.sites[0].splits["test"][0]["inputs"]["imaging"].shape == (1, 8, 8)


def test_several_archives_one_site_each(tmp_path):
    paths = [write_npz(tmp_path / f"{name}.npz") for name in ("north", "south")]

    cfg = npz_cfg(paths[0], partition={"scheme": "file"})
    cfg.path = [str(p) for p in paths]

    consortium = load_npz_sites(cfg, seed=0)

    assert [s.name for s in consortium.sites] == ["north", "south"]
    assert len(consortium.sites[1].splits["test"]) == SIZES["test"]


def _nan_images():
    images = np.random.default_rng(0).random((SIZES["val"], 12, 12)).astype(np.float32)
    images[3, 2, 2] = np.nan
    return images


@pytest.mark.parametrize(
    "replace, field, message",
    [
        ({"val_labels": None}, "val_labels", "missing array 'val_labels'"),
        ({"train_labels": np.zeros(59, dtype=np.int64)}, "train_labels", "60 images but 59 labels"),
        ({"val_images": _nan_images()}, "val_images", "non-finite"),
        ({"test_images": np.zeros((30, 12), dtype=np.uint8)}, "test_images", "expected [N, H, W]"),
        ({"train_labels": np.zeros((60, 14), dtype=np.uint8)}, "train_labels", "multi-label"),
        ({"train_labels": -np.ones(60, dtype=np.int64)}, "train_labels", "not a class index"),
    ],
    ids=["missing_key", "count_mismatch", "nan", "wrong_dims", "multilabel", "negative_label"],
)
def test_bad_npz_names_file_and_field(tmp_path, replace, field, message):
    path = write_npz(tmp_path / "bad.npz", **replace)

    with pytest.raises(DataError) as err:
        load_npz_sites(npz_cfg(path), seed=0)

    assert err.value.path == str(path) and err.value.field == field
    assert message in str(err.value)


def test_missing_npz_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such .npz file"):
        load_npz_sites(npz_cfg(tmp_path / "absent.npz"), seed=0)


# ---------------------------------------------------------------- folders of image files


def write_png(path: Path, value: int) -> None:
    pixels = np.random.default_rng(value).integers(0, 255, size=(20, 16), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path)


def write_nifti(path: Path, value: int, nan=False) -> None:
    volume = np.random.default_rng(value).random((6, 7, 8)).astype(np.float32) * 100
    if nan:
        volume[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))


def write_dicom(path: Path, value: int) -> None:
    """A minimal single-frame grey DICOM (secondary capture), as pydicom writes it."""
    pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    pixels = np.random.default_rng(value).integers(0, 4000, size=(20, 16), dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


WRITERS = {"png": write_png, "nii.gz": write_nifti, "dcm": write_dicom}


def image_folder(tmp_path: Path, suffix="png", n=24) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rows = ["file,diagnosis,hospital,patient"]
    for i in range(n):
        name = f"img{i:02d}.{suffix}"
        WRITERS[suffix](folder / name, i)
        rows.append(f"{name},{'abnormal' if i % 3 == 0 else 'normal'},{'AB'[i % 2]},p{i // 2}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def folder_cfg(folder: Path, spatial_dims=2, **overrides):
    cfg = OmegaConf.load(CONF / "data" / "image_folder.yaml")
    cfg.path = str(folder)
    cfg.columns.label = "diagnosis"
    cfg.readers.imaging.spatial_dims = spatial_dims
    cfg.readers.imaging.spatial_size = [8] * spatial_dims
    cfg.num_sites = 2
    return OmegaConf.merge(cfg, overrides)


@pytest.mark.parametrize("suffix, spatial_dims", [("png", 2), ("nii.gz", 3), ("dcm", 2)])
@pytest.mark.filterwarnings("ignore::UserWarning")  # MONAI's DICOM reader: no GPU codec, no orientation tags
def test_image_folder_becomes_sites(tmp_path, suffix, spatial_dims):
    folder = image_folder(tmp_path, suffix)

    consortium = load_image_folder_sites(folder_cfg(folder, spatial_dims), seed=0)

    assert consortium.label_space.labels == ("abnormal", "normal")
    assert len(consortium.sites) == 2
    ids = [pid for site in consortium.sites for split in site.splits.values() for pid in split.patient_ids]
    assert sorted(ids) == sorted(f"img{i:02d}.{suffix}" for i in range(24))
    image = consortium.sites[0].splits["train"][0]["inputs"]["imaging"]
    assert image.shape == (1, *[8] * spatial_dims) and 0 <= image.min() and image.max() <= 1


def test_image_folder_sites_from_a_column_and_whole_groups(tmp_path):
    folder = image_folder(tmp_path)

    by_hospital = load_image_folder_sites(folder_cfg(folder, columns={"site": "hospital"}, partition={"scheme": "key"}), seed=0)
    by_patient = load_image_folder_sites(folder_cfg(folder, columns={"group": "patient"}, partition={"scheme": "group"}), seed=0)

    assert [s.name for s in by_hospital.sites] == ["A", "B"]
    hospital_a = {pid for split in by_hospital.sites[0].splits.values() for pid in split.patient_ids}
    assert hospital_a == {f"img{i:02d}.png" for i in range(0, 24, 2)}
    for site in by_patient.sites:
        files = {pid for split in site.splits.values() for pid in split.patient_ids}
        patients = {int(f[3:5]) // 2 for f in files}
        assert {f"img{i:02d}.png" for p in patients for i in (2 * p, 2 * p + 1)} == files


def _drop_column(folder):
    (folder / "labels.csv").write_text("file,hospital\nimg00.png,A\n")
    return "labels.csv", "diagnosis", "missing column 'diagnosis'"


def _missing_file(folder):
    (folder / "img05.png").unlink()
    return "labels.csv", "file", "img05.png not found"


def _nan_nifti(folder):
    write_nifti(folder / "img04.nii.gz", 4, nan=True)
    return "img04.nii.gz", "pixels", "non-finite"


def _wrong_dims(folder):
    write_png(folder / "img04.png", 4)  # a 2D image where 3D volumes are expected
    csv = folder / "labels.csv"
    csv.write_text(csv.read_text().replace("img04.nii.gz", "img04.png"))
    return "img04.png", "spatial_dims", "expected 3D"


@pytest.mark.parametrize("corrupt", [_drop_column, _missing_file, _nan_nifti, _wrong_dims])
def test_bad_image_folder_names_file_and_field(tmp_path, corrupt):
    suffix = "png" if corrupt in (_drop_column, _missing_file) else "nii.gz"
    folder = image_folder(tmp_path, suffix)
    file, field, message = corrupt(folder)

    with pytest.raises(DataError) as err:
        load_image_folder_sites(folder_cfg(folder, 2 if suffix == "png" else 3), seed=0)

    assert err.value.path.endswith(file) and err.value.field == field
    assert message in str(err.value)


# ---------------------------------------------------------------- the experiment



def test_breastmnist_experiment_composes_for_one_modality():
    cfg = compose_config(["experiment=breastmnist"])

    assert cfg.data.loader == "modalities.image_sites.load_npz_sites"
    assert cfg.data.num_sites == 3 and list(cfg.data.readers) == ["imaging"]
    assert cfg.data.path.endswith("medmnist/breastmnist.npz")
    assert dict(cfg.report.metrics) == {"accuracy": "accuracy", "auroc": "macro_auroc"}
    assert cfg.model.fusion._target_ == "models.fusion.MaskedMeanFusion"


@pytest.mark.parametrize("spatial, n_classes", [((12, 12), 2), ((8, 8, 8), 3)], ids=["2d_binary", "3d_three_classes"])
def test_breastmnist_experiment_runs_on_any_archive_of_the_format(tmp_path, spatial, n_classes):
    path = write_npz(tmp_path / "tiny.npz", spatial=spatial, n_classes=n_classes, column_labels=True)
    cfg = compose_config(["experiment=breastmnist", f"data.path={path}", "progress=false", "federation.rounds=1",
                         "baselines.epochs=1", "data.batch_size=16", "adaptation.finetune.max_epochs=1"])

    run_experiment(cfg, tmp_path / "run")

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert list(summary["sites"]) == ["site_0", "site_1", "site_2"]
    assert summary["metric_names"] == ["accuracy", "auroc"]
    assert sum(site["n_test"] for site in summary["sites"].values()) == SIZES["test"]
    assert set(summary["overall"]) == {"local", "federated", "calibrated", "finetuned", "finetuned+calibrated", "local+calibrated", "deployed", "pooled"}


def test_image_folder_split_column_is_kept(tmp_path):
    folder = image_folder(tmp_path)
    csv = folder / "labels.csv"
    lines = csv.read_text().splitlines()
    splits = ["train", "train", "val", "test"]
    csv.write_text("\n".join([lines[0] + ",split"] + [f"{row},{splits[i % 4]}" for i, row in enumerate(lines[1:])]) + "\n")

    consortium = load_image_folder_sites(folder_cfg(folder, columns={"split": "split"}, partition={"scheme": "iid"}), seed=0)

    test_ids = sorted(pid for site in consortium.sites for pid in site.splits["test"].patient_ids)
    assert test_ids == [f"img{i:02d}.png" for i in range(3, 24, 4)]
    assert all(len(site.splits["test"]) > 0 for site in consortium.sites)


# ---------------------------------------------------------------- the same image at several sites

SCAN = np.random.default_rng(7).integers(0, 255, size=(20, 16), dtype=np.uint8)  # one patient's image, sent to two sites


def save_image(path: Path, pixels: np.ndarray) -> Path:
    """A PNG, or a NIfTI of the same pixels as MONAI reads a PNG (width first), so both decode alike."""
    if path.suffix == ".png":
        Image.fromarray(pixels, mode="L").save(path)
    else:
        nib.save(nib.Nifti1Image(pixels.T.astype(np.float32), np.diag([0.5, 0.5, 1.0, 1.0])), str(path))
    return path


def image_site(root: Path, name: str, patients: dict, write_phenopacket) -> dict:
    """A site folder: per patient (split, image file name, pixels, label) a phenopacket of its own content, an image, a split."""
    (root / name / "images").mkdir(parents=True)
    for pid, (split, file, pixels, label) in patients.items():
        age = f"P{10 * (name == 'b') + int(pid[1:])}Y"  # no two phenopackets alike: only the images may repeat
        write_phenopacket(root / name / "phenopackets", pid, label=label, age=age)
        save_image(root / name / "images" / file.replace("*", pid), pixels)
    (root / name / "split.csv").write_text("patient_id,split\n" + "".join(f"{p},{s}\n" for p, (s, *_) in patients.items()))
    return {"name": name, "path": str(root / name), "modalities": ["phenotypes", "imaging"]}


def _other(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=SCAN.shape, dtype=np.uint8)


def _one_pixel_off() -> np.ndarray:
    pixels = SCAN.copy()
    pixels[3, 4] ^= 1
    return pixels


@pytest.mark.parametrize("copy, label, expected", [
    (SCAN, "OMIM:100100", {"same_content_at_several_sites": 1, "removed_from_evaluation_seen_in_training": 1}),
    (SCAN, "OMIM:200200", {"same_content_at_several_sites": 1, "conflicting_labels": 1, "removed_from_evaluation_seen_in_training": 1}),
    (_one_pixel_off(), "OMIM:100100", None),
], ids=["same_label", "other_label", "one_pixel_off"])  # fmt: skip
def test_an_image_sent_as_png_to_one_site_and_nifti_to_another_is_counted_and_kept_out_of_evaluation(
    tmp_path, write_phenopacket, copy, label, expected
):
    sites = [
        image_site(tmp_path, "a", {"a1": ("train", "*.png", SCAN, "OMIM:100100"), "a2": ("test", "*.png", _other(1), "OMIM:100100")},
                   write_phenopacket),
        image_site(tmp_path, "b", {"b1": ("train", "*.png", _other(2), "OMIM:200200"), "b2": ("test", "*.nii.gz", copy, label)},
                   write_phenopacket),
    ]
    readers = {"phenotypes": {"_target_": "modalities.phenotypes.PhenotypeReader"},
               "imaging": {"_target_": "modalities.imaging.ImageReader", "spatial_size": [8, 8]}}

    consortium = load_site_folders(OmegaConf.create({"sites": sites, "readers": readers}), seed=0)

    test_ids = {site.name: site.splits["test"].patient_ids for site in consortium.sites}
    assert test_ids == {"a": ["a2"], "b": [] if expected else ["b2"]}  # b2's image is a1's, which site a trains on
    assert consortium.quality.get("all_sites", {}).get("duplicates") == ({"images": expected} if expected else None)
    assert "b2" not in json.dumps(consortium.quality) and "a1" not in json.dumps(consortium.quality)


def test_an_image_folder_copy_in_another_format_at_another_site_leaves_its_test_set(tmp_path):
    rows = ["file,diagnosis,hospital,split"]
    for site, seed in (("A", 10), ("B", 20)):
        for j, split in enumerate(("train", "train", "val", "test")):
            label = "abnormal" if j % 2 else "normal"
            pixels = SCAN if (site, j) == ("A", 0) else _other(seed + j)
            name = f"{site}{j}.png"
            if (site, j) == ("B", 3):  # hospital B's test image is hospital A's training image, as a NIfTI
                name, pixels, label = "B3.nii.gz", SCAN, "normal"
            save_image(tmp_path / name, pixels)
            rows.append(f"{name},{label},{site},{split}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    cfg = folder_cfg(tmp_path, columns={"site": "hospital", "split": "split"}, partition={"scheme": "key"})

    consortium = load_image_folder_sites(cfg, seed=0)

    assert [s.splits["test"].patient_ids for s in consortium.sites] == [["A3.png"], []]
    assert consortium.quality["all_sites"]["duplicates"] == {
        "images": {"same_content_at_several_sites": 1, "removed_from_evaluation_seen_in_training": 1}}
    assert consortium.quality["B"]["duplicates"] == {"identical_files": 0, "identical_files_across_splits": 0}  # as read, per site


def test_an_archive_image_in_another_archive_as_floats_leaves_that_sites_test_set(tmp_path):
    north = write_npz(tmp_path / "north.npz")
    train = np.load(north)["train_images"]
    rng = np.random.default_rng(1)
    own = {f"{split}_images": rng.integers(0, 255, size=(n, 12, 12)).astype(np.float32) for split, n in SIZES.items()}
    own["test_images"][0] = train[3]  # the same picture (label 0 in both), stored as float32 instead of uint8
    south = write_npz(tmp_path / "south.npz", **own)
    cfg = npz_cfg(north, partition={"scheme": "file"})
    cfg.path = [str(north), str(south)]

    consortium = load_npz_sites(cfg, seed=0)

    assert [len(site.splits["test"]) for site in consortium.sites] == [SIZES["test"], SIZES["test"] - 1]
    assert "south/test_00" not in consortium.sites[1].splits["test"].patient_ids
    assert consortium.quality["all_sites"]["duplicates"] == {
        "images": {"same_content_at_several_sites": 1, "removed_from_evaluation_seen_in_training": 1}}


def test_distinct_images_leave_every_split_and_the_report_as_they_were(tmp_path):
    consortium = load_npz_sites(npz_cfg(write_npz(tmp_path / "a.npz")), seed=0)

    assert sum(len(site.splits["test"]) for site in consortium.sites) == SIZES["test"]
    assert "all_sites" not in consortium.quality
