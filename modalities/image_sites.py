"""Image collections as a consortium: one archive (or folder) of labelled images, cut into simulated sites.

Two loaders, named in `data.loader` (each `load_xxx(cfg, seed) -> Consortium`):

- `load_npz_sites`: MedMNIST-style `.npz` archives (`train_images`, `val_images`,
  `test_images` and the matching `*_labels`). The archive's own splits are kept:
  the sites are drawn once over all its images (modalities.partition, with the
  archive split as a stratum), and a site's train/val/test are its share of the
  archive's train/val/test. So every site has a held-out test set with the same
  label mix as its training data, and no image moves between the published
  splits. `data.path` may also list several archives; with `partition.scheme:
  file` each archive is a site.
- `load_image_folder_sites`: a folder of image files (PNG, NIfTI, DICOM: anything
  MONAI's LoadImage reads) and a labels CSV whose column names come from config
  (file, label, and optionally site, group and split). Sites come from the site
  column (`key`), from whole groups (`group`), or from the label-skew schemes;
  without a split column each site is split by a seeded stratified draw.

The same image at several sites (or in one site's training and evaluation splits)
is found by its decoded pixels (`modalities.imaging.pixel_key`, so a PNG and a
NIfTI of one image match): an evaluation copy of an image some site trains on is
removed from evaluation, and the counts go to quality.json under
`all_sites.duplicates.images` (modalities/duplicates.py). Each site's own report
still counts its identical pixels (archives) or files (folders) as read.

Every image becomes the `imaging` input of one record, shaped [1, *spatial] and
scaled to [0, 1] per image by the same MONAI transforms ImageReader uses (and
resized to the reader's `spatial_size`), so the default imaging encoder and
ImageReader's stacking collate serve both. Archive images may carry a trailing
channel axis (MedMNIST's layout: [N, H, W, C] or [N, D, H, W, C], C in 1, 3, 4);
colour is converted to grey with ITU-R BT.601 luma, as ImageReader does. The
class names are the archive's integer labels as text ("0", "1", ...; zero-padded
when there are ten or more), and the number of classes is what the labels hold.

The resolvers `rarefed.npz_spatial_dims` and `rarefed.npz_spatial_size` let a data
config take the image dimensionality and size from the archive itself (they read
only the array headers), so one config serves 2D and 3D archives of any size.
"""
from __future__ import annotations

import logging
import zipfile
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from monai.data import MetaTensor
from monai.transforms import Compose, Resize, ScaleIntensity
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor

from modalities.base import DataError, Modality, regular_file
from modalities.consortium import Consortium
from modalities.dataset import SiteDataset
from modalities.duplicates import separate_duplicates
from modalities.imaging import ImageReader, check_min_size, pixel_key
from modalities.labels import LabelSpace
from modalities.partition import (
    Partition,
    label_skew,
    partition_by_key,
    partition_records,
    split_site,
)
from modalities.quality import (
    ReadStats,
    collection_quality,
    content_hash,
    image_quality,
    min_count_from,
)
from modalities.site_data import SiteData
from modalities.splits import SPLITS

log = logging.getLogger(__name__)

NPZ_SPLITS: tuple[str, ...] = SPLITS  # the archive's own splits, mapped one to one onto each site's
_LUMA = (0.299, 0.587, 0.114)
IMAGING = Modality.IMAGING.value
FOLDER_COLUMNS: dict[str, str | None] = {"file": "file", "label": "label", "site": None, "group": None, "split": None}


# ---------------------------------------------------------------- .npz archives


def load_npz_sites(cfg: DictConfig, seed: int) -> Consortium:
    """Sites cut from one or more MedMNIST-style archives (`data.path`), keeping the archives' own splits."""
    paths = _paths(cfg.path)
    archives = {path: read_npz(path) for path in paths}
    reader: ImageReader = instantiate(cfg.readers[IMAGING])
    for path, arrays in archives.items():
        _check_spatial_dims(path, arrays, reader.spatial_dims)
        for split, (images, _) in arrays.items():
            check_min_size(path, _layout(images.shape)[1], reader.min_size, field=f"{split}_images")
    width = len(str(max(int(labels.max(initial=0)) for arrays in archives.values() for _, labels in arrays.values())))
    found = {_class_name(v, width) for arrays in archives.values() for _, labels in arrays.values() for v in np.unique(labels)}
    label_space = LabelSpace([str(label) for label in cfg.get("labels") or found])
    prepare = _image_transform(reader.spatial_size)

    records: list[dict[str, Any]] = []
    for path, arrays in archives.items():
        prefix = f"{path.stem}/" if len(archives) > 1 else ""
        for split, (images, labels) in arrays.items():
            digits = len(str(len(images) - 1))
            for i in range(len(images)):
                records.append(
                    {"id": f"{prefix}{split}_{i:0{digits}d}", "split": split, "file": path.stem, "array": (path, split, i),
                     "label": _class_name(labels[i], width)}
                )
    partition = _partition(cfg, seed, records, keys=[r["file"] for r in records], strata=[r["split"] for r in records])

    def item(record: dict) -> dict:
        path, split, i = record["array"]
        image = prepare(_to_grey(torch.from_numpy(np.asarray(archives[path][split][0][i], dtype=np.float32)), reader.spatial_dims))
        return _item(record["id"], label_space.index(record["label"]), image)

    sites, quality, min_count = [], {}, min_count_from(cfg)
    for s, name in enumerate(partition.names):
        members = [records[i] for i in partition.members(s)]
        splits = {split: SiteDataset([item(r) for r in members if r["split"] == split], [IMAGING]) for split in NPZ_SPLITS}
        sites.append(SiteData(name=name, modalities=(IMAGING,), splits=splits))
        hashes = [content_hash(archives[r["array"][0]][r["split"]][0][r["array"][2]]) for r in members]  # the archive's pixels
        quality[name] = collection_quality(splits, IMAGING, label_space.labels, min_count, fields={"spatial_size": list(reader.spatial_size)},
                                           repairs=_npz_repairs(archives, members, reader.spatial_size),
                                           duplicates=image_quality(hashes, [r["split"] for r in members]))
    keys = {r["id"]: pixel_key(archives[r["array"][0]][r["split"]][0][r["array"][2]]) for r in records}
    sites = _separate_image_duplicates(sites, keys, quality)
    return Consortium(sites, label_space, [IMAGING], {IMAGING: reader}, quality)


def read_npz(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images [N, *spatial(, C)], integer labels [N])}, validated (keys, counts, finiteness, shapes)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise DataError(path, "no such .npz file")
    regular_file(path)  # a named pipe would block np.load
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(path, f"cannot read .npz archive: {err}") from err
    with archive:
        expected = [f"{split}_{kind}" for split in NPZ_SPLITS for kind in ("images", "labels")]
        missing = [key for key in expected if key not in archive.files]
        if missing:
            held = ", ".join(sorted(archive.files))
            raise DataError(path, f"missing array {missing[0]!r} (the archive holds {held})", field=missing[0])
        arrays = {split: (_array(path, archive, f"{split}_images"), _array(path, archive, f"{split}_labels")) for split in NPZ_SPLITS}
    shapes = set()
    for split, (images, labels) in arrays.items():
        arrays[split] = (images, _check_labels(path, split, labels, len(images)))
        _check_images(path, split, images)
        shapes.add(tuple(images.shape[1:]))
    if len(shapes) > 1:
        raise DataError(path, f"the splits' images differ in shape: {sorted(shapes)}", field="test_images")
    return arrays


def _array(path: Path, archive, key: str) -> np.ndarray:
    """One array of an archive; pickled Python objects are never loaded (they can run code), and say so."""
    try:
        return archive[key]
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DataError(path, "the array holds pickled Python objects, which are not loaded: save numbers (np.savez with a numeric dtype)", field=key) from None
        raise DataError(path, f"cannot read the array: {err}", field=key) from None
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(path, f"cannot read the array: {err}", field=key) from None


def npz_image_layout(path: str | Path) -> tuple[int, tuple[int, ...], int]:
    """(spatial_dims, spatial size, channels) of an archive's `train_images`, from the array header only."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise DataError(path, "no such .npz file")
    stat = regular_file(path).stat()
    return _layout(_header_shape(str(path), "train_images", stat.st_mtime_ns, stat.st_size))


# ---------------------------------------------------------------- folders of image files


def load_image_folder_sites(cfg: DictConfig, seed: int) -> Consortium:
    """Sites from a folder of images and its labels CSV (`data.path`, `data.labels_csv`, `data.columns`)."""
    folder = Path(cfg.path)
    csv_path = folder / cfg.get("labels_csv", "labels.csv")
    columns = {**FOLDER_COLUMNS, **OmegaConf.to_container(cfg.get("columns") or {})}
    table = _read_labels_csv(csv_path, columns)
    reader: ImageReader = instantiate(cfg.readers[IMAGING])
    label_space = LabelSpace([str(label) for label in cfg.get("labels") or table[columns["label"]].tolist()])
    records = _folder_records(folder, csv_path, table, columns, label_space)

    scheme = cfg.partition.scheme
    key_column = {"key": "site", "group": "group"}.get(scheme)
    if key_column and not columns[key_column]:
        raise ValueError(f"partition scheme {scheme!r} needs data.columns.{key_column} (a column of {csv_path.name})")
    keys = [r[key_column] for r in records] if key_column else None
    strata = [r["split"] for r in records] if columns["split"] else None
    partition = _partition(cfg, seed, records, keys=keys, strata=strata)
    fractions = OmegaConf.to_container(cfg.split_fractions) if cfg.get("split_fractions") else None

    sites, quality, min_count = [], {}, min_count_from(cfg)
    reader.pixel_keys = {}  # filled by reader.load, one key per image id, for the cross-site check below
    for s, name in enumerate(partition.names):
        members = [records[i] for i in partition.members(s)]
        converted = _rgb_to_grey_count(reader)
        if columns["split"]:
            assigned = {split: [r["id"] for r in members if r["split"] == split] for split in SPLITS}
        else:
            assigned = split_site([r["id"] for r in members], [r["label"] for r in members], seed, fractions)
        by_id = {r["id"]: r for r in members}
        load = lambda ids: SiteDataset([_load_item(reader, by_id[i], label_space) for i in ids], [IMAGING])
        splits = {split: load(ids) for split, ids in assigned.items()}
        sites.append(SiteData(name=name, modalities=(IMAGING,), splits=splits))
        repairs = ReadStats()
        repairs.add("rgb_to_grey", n=_rgb_to_grey_count(reader) - converted)
        in_split = [(split, by_id[i]["path"]) for split, ids in assigned.items() for i in ids]
        hashes = [content_hash(path.read_bytes()) for _, path in in_split]  # whole files: identical bytes, not only pixels
        quality[name] = collection_quality(splits, IMAGING, label_space.labels, min_count, fields={"spatial_size": list(reader.spatial_size)},
                                           repairs=repairs, duplicates=image_quality(hashes, [split for split, _ in in_split], "identical_files"))
    keys, reader.pixel_keys = reader.pixel_keys, {}  # the reader goes on to the sites without them
    sites = _separate_image_duplicates(sites, keys, quality)
    return Consortium(sites, label_space, [IMAGING], {IMAGING: reader}, quality)


def _folder_records(folder: Path, csv_path: Path, table: pd.DataFrame, columns: dict, label_space: LabelSpace) -> list[dict]:
    """One record per CSV row, checked: a label in the label space, an existing image file, a known split, no repeats."""
    records = []
    for offset, row in enumerate(table.to_dict("records")):
        record_id, label = row[columns["file"]], row[columns["label"]]
        where = f"row {offset + 2} ({record_id})"
        if label == "" or label not in label_space:
            problem = "empty label" if label == "" else f"label {label!r} is not in data.labels"
            raise DataError(csv_path, problem, record=where, field=columns["label"])
        if not (folder / record_id).is_file():
            raise DataError(csv_path, f"image file {folder / record_id} not found", record=where, field=columns["file"])
        split = row[columns["split"]] if columns["split"] else None
        if split is not None and split not in SPLITS:
            raise DataError(csv_path, f"split {split!r} is not one of {', '.join(SPLITS)}", record=where, field=columns["split"])
        extra = {role: row[columns[role]] if columns[role] else None for role in ("site", "group")}
        records.append({"id": record_id, "path": folder / record_id, "label": label, "split": split, **extra})
    duplicates = [record_id for record_id, n in Counter(r["id"] for r in records).items() if n > 1]
    if duplicates:
        raise DataError(csv_path, f"image {duplicates[0]!r} is listed twice", record=duplicates[0], field=columns["file"])
    return records


def _read_labels_csv(path: Path, columns: dict[str, str | None]) -> pd.DataFrame:
    if not path.exists() and not path.is_symlink():
        raise DataError(path, "labels CSV not found")
    regular_file(path)  # a named pipe would block the read
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot parse CSV: {err}") from err
    table.columns = [str(c).strip() for c in table.columns]
    for role, column in columns.items():
        if column and column not in table.columns:
            raise DataError(path, f"missing column {column!r} (the {role} column; found {', '.join(table.columns)})", field=column)
    if table.empty:
        raise DataError(path, "no rows")
    return table.apply(lambda c: c.str.strip())


def _load_item(reader: ImageReader, record: dict, label_space: LabelSpace) -> dict:
    image = reader.load(record["path"], record["id"])
    if not torch.isfinite(image).all():
        raise DataError(record["path"], "non-finite pixel values (NaN or inf)", record=record["id"], field="pixels")
    return _item(record["id"], label_space.index(record["label"]), image)


# ---------------------------------------------------------------- shared


def _separate_image_duplicates(sites: list[SiteData], keys: dict[str, str], quality: dict) -> list[SiteData]:
    """The sites without evaluation copies of training images; the counts to `quality["all_sites"]` (when any)."""
    sites, duplicates = separate_duplicates(sites, images=lambda site, item: keys.get(item["patient_id"]))
    if duplicates:
        quality["all_sites"] = {"duplicates": duplicates}
    return sites


def _npz_repairs(archives: dict, members: list[dict], spatial_size: Sequence[int]) -> ReadStats:
    """RGB(A) archive images made grey, and images resized (detail: source size -> size fed to the encoder)."""
    stats = ReadStats()
    target = "x".join(str(int(s)) for s in spatial_size)
    for (path, split), n in Counter((r["array"][0], r["split"]) for r in members).items():
        _, shape, channels = _layout(archives[path][split][0].shape)
        if channels in (3, 4):
            stats.add("rgb_to_grey", n=n)
        if tuple(shape) != tuple(int(s) for s in spatial_size):
            stats.add("resized", f"{'x'.join(map(str, shape))} -> {target}", n)
    return stats


def _rgb_to_grey_count(reader: ImageReader) -> int:
    """ImageReader's running count of RGB(A) files made grey (its shape check keeps it)."""
    return int(getattr(getattr(reader, "_check", None), "rgb_to_grey", 0))


def _partition(cfg: DictConfig, seed: int, records: list[dict], keys: Sequence | None, strata: Sequence | None) -> Partition:
    scheme = cfg.partition.scheme
    labels = [r["label"] for r in records]
    if scheme == "file":
        if keys is None:
            raise ValueError("partition scheme 'file' needs several source files (data.path as a list of archives)")
        partition = partition_by_key(keys)
    else:
        partition = partition_records(
            scheme, labels, seed, num_sites=cfg.get("num_sites"), alpha=cfg.partition.get("alpha"), keys=keys, strata=strata
        )
    sizes = dict(zip(partition.names, partition.sizes()))
    empty = [name for name, size in sizes.items() if size == 0]
    if empty:
        raise ValueError(f"partition left sites {empty} without records")
    skew = label_skew(labels, partition)
    log.info("%s partition into %d sites, sizes %s, label skew (mean TV distance) %.3f", scheme, len(sizes), sizes, skew)
    return partition


def _item(record_id: str, label: int, image: Tensor) -> dict:
    return {"patient_id": record_id, "label": label, "inputs": {IMAGING: image}, "meta": {}}


def _image_transform(spatial_size: Sequence[int]):
    """[1, *spatial] float -> scaled to [0, 1] and resized as ImageReader does, as a plain tensor."""
    transform = Compose([ScaleIntensity(), Resize(tuple(spatial_size))])

    def apply(image: Tensor) -> Tensor:
        out = transform(image)
        if isinstance(out, MetaTensor):
            out = out.as_tensor()
        return out.float().contiguous()

    return apply


def _to_grey(image: Tensor, spatial_dims: int) -> Tensor:
    """One archive image [*spatial] or [*spatial, C] -> [1, *spatial]."""
    if image.ndim == spatial_dims:
        return image.unsqueeze(0)
    channels = image.shape[-1]
    if channels == 1:
        return image[..., 0].unsqueeze(0)
    weights = torch.tensor(_LUMA, dtype=image.dtype)
    return (image[..., :3] * weights).sum(-1).unsqueeze(0)


def _layout(shape: Sequence[int]) -> tuple[int, tuple[int, ...], int]:
    """(spatial_dims, spatial size, channels) of an image array [N, ...]; a trailing 1, 3 or 4 is a channel axis."""
    per_image = tuple(int(s) for s in shape[1:])
    if len(per_image) == 3 and per_image[-1] in (1, 3, 4) or len(per_image) == 4:
        return len(per_image) - 1, per_image[:-1], per_image[-1]
    return len(per_image), per_image, 1


def _check_images(path: Path, split: str, images: np.ndarray) -> None:
    field = f"{split}_images"
    spatial_dims, _, channels = _layout(images.shape)
    if images.ndim not in (3, 4, 5) or spatial_dims not in (2, 3) or (images.ndim == 5 and channels not in (1, 3, 4)):
        expected = "[N, H, W], [N, D, H, W] or either with a trailing channel axis"
        raise DataError(path, f"images of shape {images.shape}: expected {expected}", field=field)
    if not (np.issubdtype(images.dtype, np.number) and not np.issubdtype(images.dtype, np.complexfloating)):
        raise DataError(path, f"images of dtype {images.dtype}, expected numbers", field=field)
    if np.issubdtype(images.dtype, np.floating):
        bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            message = f"{int(bad.sum())} images with non-finite pixel values (NaN or inf)"
            raise DataError(path, message, record=f"{split}[{first}]", field=field)


def _check_labels(path: Path, split: str, labels: np.ndarray, n_images: int) -> np.ndarray:
    field = f"{split}_labels"
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        message = f"labels of shape {labels.shape}: expected [N] or [N, 1] (one class per image; multi-label is not supported)"
        raise DataError(path, message, field=field)
    if len(labels) != n_images:
        raise DataError(path, f"{n_images} images but {len(labels)} labels", field=field)
    if not np.issubdtype(labels.dtype, np.number) or np.issubdtype(labels.dtype, np.complexfloating):
        raise DataError(path, f"labels of dtype {labels.dtype}, expected integer class indices", field=field)
    bad = ~np.isfinite(labels) | (labels < 0) | (labels != np.round(labels)) if labels.dtype.kind == "f" else labels < 0
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        message = f"label {labels[first]!r} is not a class index (an integer >= 0)"
        raise DataError(path, message, record=f"{split}[{first}]", field=field)
    return labels.astype(np.int64)


def _check_spatial_dims(path: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]], expected: int) -> None:
    found, shape, _ = _layout(arrays["train"][0].shape)
    if found != expected:
        message = f"{found}D images (shape {shape}), expected {expected}D (data.readers.imaging.spatial_dims)"
        raise DataError(path, message, field="train_images")


def _class_name(value: Any, width: int) -> str:
    return f"{int(value):0{width}d}"


def _paths(value: Any) -> list[Path]:
    paths = [Path(str(p)) for p in value] if isinstance(value, (list, tuple, ListConfig)) else [Path(str(value))]
    if not paths:
        raise ValueError("data.path lists no .npz archive")
    return paths


@lru_cache(maxsize=32)
def _header_shape(path: str, key: str, mtime_ns: int, size: int) -> tuple[int, ...]:
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = reader(member)
    except KeyError as err:
        raise DataError(path, f"missing array {key!r}", field=key) from err
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(path, f"cannot read .npz archive: {err}") from err
    return tuple(shape)


def _resolve_spatial_dims(path: Any) -> int:
    return npz_image_layout(_paths(path)[0])[0]


def _resolve_spatial_size(path: Any, size: Any = None) -> list[int]:
    if size is not None:
        return [int(s) for s in size]
    return list(npz_image_layout(_paths(path)[0])[1])


OmegaConf.register_new_resolver("rarefed.npz_spatial_dims", _resolve_spatial_dims, replace=True)
OmegaConf.register_new_resolver("rarefed.npz_spatial_size", _resolve_spatial_size, replace=True)
