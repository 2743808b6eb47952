"""A site's patients with all their modalities, split into train/val/test, and the batch collate.

Everything is read and validated once in `load_site`, so a bad file stops the run
before training starts. A patient exists when it has a phenopacket; any other
modality may be absent for a patient, which the batch's `present` mask records
(nothing is imputed: absent rows are zeros and must be masked by the model).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset

from modalities.base import ALL_MODALITIES, DataError, Modality
from modalities.feedback import join_feedback
from modalities.labels import LabelSpace, UnknownLabelError
from modalities.phenopacket_io import PatientRecord, read_cohort
from modalities.phenotypes import PhenotypeReader
from modalities.quality import ReadStats
from modalities.splits import SPLITS, load_or_draw_split

LABEL_FIELD = "interpretations[0].diagnosis.disease.id"


class Reader(Protocol):
    def read_site(self, site_dir: Path, records: list[PatientRecord]) -> dict[str, Tensor]: ...

    def collate(self, items: list[Tensor]) -> Tensor: ...


class SiteDataset(Dataset):
    """Items: {"patient_id", "label" (class index), "inputs" {modality: Tensor}, "meta" {"sex", "age_years"}}."""

    def __init__(self, items: Sequence[dict[str, Any]], modalities: Sequence[str]):
        self.items = list(items)
        self.modalities = tuple(modalities)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]

    @property
    def patient_ids(self) -> list[str]:
        return [item["patient_id"] for item in self.items]

    @property
    def labels(self) -> list[int]:
        return [item["label"] for item in self.items]


def load_site(
    site_dir: str | Path,
    modalities: Sequence[str],
    readers: Mapping[str, Reader],
    label_space: LabelSpace,
    seed: int,
    phenopacket_dir: str = "phenopackets",
    fractions: Mapping[str, float] | None = None,
    stats: ReadStats | None = None,
) -> dict[str, SiteDataset]:
    """Read, validate and join a site's modalities; returns {"train", "val", "test"} datasets.

    The phenopackets' repairs (modalities/phenopacket_io.py) are counted in `stats` when given.
    """
    site_dir = Path(site_dir)
    modalities = _check_modalities(modalities)
    records = read_cohort(site_dir / phenopacket_dir, stats)
    if not records:
        raise DataError(site_dir / phenopacket_dir, "no phenopackets (*.json) found")
    labels = {r.patient_id: _label_index(r, label_space) for r in records}
    data = {m: _reader_for(m, readers).read_site(site_dir, records) for m in modalities}
    items = {
        r.patient_id: {
            "patient_id": r.patient_id,
            "label": labels[r.patient_id],
            "inputs": {m: data[m][r.patient_id] for m in modalities if _present(data[m].get(r.patient_id))},
            "meta": {"sex": r.sex, "age_years": r.age_years},
        }
        for r in records
    }
    split = load_or_draw_split(site_dir, records, seed, fractions)
    split = join_feedback(site_dir, items, split, label_space)  # clinician-confirmed cases validate (modalities/feedback.py)
    return {name: SiteDataset([items[pid] for pid in split[name]], modalities) for name in SPLITS}


def collate_batch(items: Sequence[Mapping[str, Any]], modalities: Sequence[str], readers: Mapping[str, Reader]) -> dict:
    """Batch items as {"inputs", "present" [B, M], "label" [B], "patient_id"}; use with functools.partial.

    A modality present in some rows is collated from those rows by its reader, and the
    other rows are zeros of the same shape; a modality absent from every row is left
    out of "inputs" (its "present" column is all False).
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    present = torch.tensor([[m in item["inputs"] for m in modalities] for item in items], dtype=torch.bool)
    inputs: dict[str, Tensor] = {}
    for j, modality in enumerate(modalities):
        rows = present[:, j].nonzero().flatten().tolist()
        if not rows:
            continue
        stacked = _reader_for(modality, readers).collate([items[i]["inputs"][modality] for i in rows])
        if len(rows) == len(items):
            inputs[modality] = stacked
            continue
        full = stacked.new_zeros((len(items), *stacked.shape[1:]))
        full[rows] = stacked
        inputs[modality] = full
    return {
        "inputs": inputs,
        "present": present,
        "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
        "patient_id": [item["patient_id"] for item in items],
    }


def site_labels(site_dir: str | Path, phenopacket_dir: str = "phenopackets") -> set[str]:
    """The diagnoses a site holds (for building the consortium's label space)."""
    return {r.label for r in read_cohort(Path(site_dir) / phenopacket_dir) if r.label is not None}


def _label_index(record: PatientRecord, label_space: LabelSpace) -> int:
    if record.label is None:
        raise DataError(record.source, "no diagnosis (the label)", record=record.patient_id, field=LABEL_FIELD)
    try:
        return label_space.index(record.label)
    except UnknownLabelError as err:
        raise DataError(record.source, str(err), record=record.patient_id, field=LABEL_FIELD) from err


def _reader_for(modality: str, readers: Mapping[str, Reader]) -> Reader:
    if modality in readers:
        return readers[modality]
    if modality == Modality.PHENOTYPES:
        return _default_phenotype_reader()
    raise ValueError(f"no reader configured for modality {modality!r}")


@lru_cache(maxsize=1)
def _default_phenotype_reader() -> PhenotypeReader:
    return PhenotypeReader()


def _present(tensor: Tensor | None) -> bool:
    """A modality counts as present when it has content (e.g. a phenopacket with no HPO terms does not)."""
    return tensor is not None and tensor.numel() > 0


def _check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    modalities = tuple(str(m) for m in modalities)
    unknown = [m for m in modalities if m not in ALL_MODALITIES]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; known: {', '.join(ALL_MODALITIES)}")
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"modality listed twice: {list(modalities)}")
    return modalities
