"""A consortium's patients as the diagnosis task reads them: signed HPO terms, candidate variants, diagnosis.

The readers (modalities/) already turned every phenopacket into tensors; this keeps,
per site and split, what the likelihood-ratio scorer needs, as plain arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from modalities.base import Modality
from modalities.consortium import Consortium

SPLITS = ("train", "val", "test")


@dataclass
class Patients:
    """One site's split: signed term arrays (index + 1, negative = excluded), variant rows, labels, reported genes."""

    ids: list[str]
    terms: list[np.ndarray]
    labels: np.ndarray
    variants: list[np.ndarray | None]
    genes: list[tuple[str, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def concat(parts: list[Patients]) -> Patients:
        return Patients(
            [i for p in parts for i in p.ids],
            [t for p in parts for t in p.terms],
            np.concatenate([p.labels for p in parts]) if parts else np.empty(0, np.int64),
            [v for p in parts for v in p.variants],
            [g for p in parts for g in p.genes],
        )


@dataclass
class Cohort:
    labels: tuple[str, ...]
    sites: dict[str, dict[str, Patients]]
    variant_columns: tuple[str, ...] = ()
    quality: dict = field(default_factory=dict)  # the readers' per-site quality reports (aggregates only)

    def split(self, name: str) -> dict[str, Patients]:
        return {site: splits[name] for site, splits in self.sites.items()}


def cohort_from(consortium: Consortium) -> Cohort:
    phenotypes, variants = str(Modality.PHENOTYPES), str(Modality.VARIANTS)
    sites = {}
    for site in consortium.sites:
        sites[site.name] = {}
        for name in SPLITS:
            items = site.splits[name].items
            sites[site.name][name] = Patients(
                ids=[item["patient_id"] for item in items],
                terms=[_array(item["inputs"].get(phenotypes)) for item in items],
                labels=np.array([int(item["label"]) for item in items], dtype=np.int64),
                variants=[_rows(item["inputs"].get(variants)) for item in items],
                genes=[tuple(item.get("meta", {}).get("genes", ())) for item in items],
            )
    reader = consortium.readers.get(variants)
    columns = tuple(reader.columns) if reader is not None else ()
    return Cohort(tuple(consortium.label_space.labels), sites, columns, consortium.quality)


def _array(tensor) -> np.ndarray:
    return np.empty(0, np.int64) if tensor is None else tensor.numpy().astype(np.int64)


def _rows(tensor) -> np.ndarray | None:
    return None if tensor is None else tensor.numpy().astype(np.float32)
