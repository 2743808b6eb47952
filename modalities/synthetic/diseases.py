"""Which real OMIM diseases the consortium simulates, with their term frequencies, genes and inheritance.

A random draw from all of OMIM would give diseases that differ in every organ
system and are trivially told apart. Drawing only among diseases whose terms lie
mostly under one branch of the HPO (by default the nervous system) gives a set of
phenotypically related diseases, as a clinic that specialises would see.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from modalities.annotations import Annotations
from modalities.hpo import HpoIndex
from modalities.synthetic.frequency import frequency_to_probability

RECESSIVE, DOMINANT, X_LINKED = "autosomal_recessive", "autosomal_dominant", "x_linked"
# Checked in this order: a disease annotated both X-linked and autosomal is treated as X-linked.
INHERITANCE_TERMS: tuple[tuple[str, frozenset[str]], ...] = (
    (X_LINKED, frozenset({"HP:0001417", "HP:0001419", "HP:0001423"})),
    (RECESSIVE, frozenset({"HP:0000007"})),
    (DOMINANT, frozenset({"HP:0000006"})),
)


@dataclass(frozen=True)
class Disease:
    id: str
    name: str
    genes: tuple[str, ...]
    inheritance: str
    terms: tuple[str, ...]  # primary HPO ids, sorted
    frequencies: tuple[float, ...]  # probability a patient shows each term

    def summary(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "genes": list(self.genes), "inheritance": self.inheritance}


def choose_diseases(
    annotations: Annotations,
    index: HpoIndex,
    rng: np.random.Generator,
    n_diseases: int,
    min_terms: int,
    root_term: str,
    min_root_fraction: float,
) -> tuple[Disease, ...]:
    """``n_diseases`` eligible diseases drawn with ``rng``, sorted by id."""
    table = _disease_terms(annotations, index)
    eligible = _eligible(table, annotations, index, min_terms, root_term, min_root_fraction)
    if len(eligible) < n_diseases:
        raise ValueError(
            f"only {len(eligible)} OMIM diseases have >= {min_terms} terms, a gene and "
            f">= {min_root_fraction:.0%} of terms under {root_term}; asked for {n_diseases}"
        )
    picked = sorted(rng.choice(eligible, size=n_diseases, replace=False).tolist())
    return tuple(_disease(d, table, annotations) for d in picked)


def _disease_terms(annotations: Annotations, index: HpoIndex) -> pd.DataFrame:
    """One row per (disease, primary term) with the mean probability over the annotation's sources."""
    rows = annotations.phenotypes.copy()
    rows["term"] = rows["hpo_id"].map(primary_ids(index, rows["hpo_id"].unique()))
    rows = rows[rows["term"].notna()]
    rows["probability"] = rows["frequency"].map(frequency_to_probability)
    table = rows.groupby(["database_id", "term"], as_index=False).agg(
        disease_name=("disease_name", "first"), probability=("probability", "mean")
    )
    return table[table["probability"] > 0]


def _eligible(
    table: pd.DataFrame, annotations: Annotations, index: HpoIndex, min_terms: int, root: str, min_fraction: float
) -> np.ndarray:
    under = under_root(index, root)
    position = index.position
    table = table.assign(under=table["term"].map(lambda t: under[position[t]]))
    stats = table.groupby("database_id").agg(n_terms=("term", "size"), root_fraction=("under", "mean"))
    with_gene = set(annotations.genes["disease_id"])
    keep = (stats["n_terms"] >= min_terms) & (stats["root_fraction"] >= min_fraction) & stats.index.isin(with_gene)
    return np.array(sorted(stats.index[keep]))


def under_root(index: HpoIndex, root: str) -> np.ndarray:
    """Mask over the index: True for the root and every term below it."""
    root_position = index.index_of(root)
    if root_position is None:
        raise ValueError(f"root term {root} is not in the HPO index")
    rows = np.repeat(np.arange(index.size), np.diff(index.ancestor_indptr))
    under = np.zeros(index.size, dtype=bool)
    under[rows[index.ancestor_indices == root_position]] = True
    return under


def _disease(disease_id: str, table: pd.DataFrame, annotations: Annotations) -> Disease:
    rows = table[table["database_id"] == disease_id].sort_values("term")
    genes = annotations.genes.loc[annotations.genes["disease_id"] == disease_id, "gene_symbol"]
    return Disease(
        id=disease_id,
        name=str(rows["disease_name"].iloc[0]),
        genes=tuple(sorted(set(genes))),
        inheritance=_inheritance(disease_id, annotations),
        terms=tuple(rows["term"]),
        frequencies=tuple(float(p) for p in rows["probability"]),
    )


def _inheritance(disease_id: str, annotations: Annotations) -> str:
    """The disease's mode of inheritance from its aspect-I annotations; dominant when none is given."""
    rows = annotations.inheritance
    terms = set(rows.loc[rows["database_id"] == disease_id, "hpo_id"])
    for mode, mode_terms in INHERITANCE_TERMS:
        if terms & mode_terms:
            return mode
    return DOMINANT


def primary_ids(index: HpoIndex, term_ids: Iterable[str]) -> dict[str, str]:
    """Current id for each given id (alternative ids resolved); ids the index does not know are left out."""
    position, alternatives = index.position, index.alt_ids
    resolved = {t: (t if t in position else alternatives.get(t)) for t in term_ids}
    return {t: p for t, p in resolved.items() if p is not None}
