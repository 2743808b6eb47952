"""Likelihood ratios of observed and excluded HPO terms under each candidate disease.

The training-free phenotype ranker in the spirit of LIRICAL (Robinson et al. 2020,
"Interpretable clinical genomics with a likelihood ratio paradigm", AJHG 107:403):
a disease's score is the sum over the patient's terms of log likelihood ratios, so
every term's contribution can be read off, and excluded terms count too.

For a disease d and a term t:
- ``F[d, t]``: the probability that a patient with d shows t or a more specific term:
  the highest frequency among d's annotations at t or below it (an annotation implies
  every ancestor). Built from phenotype.hpoa (`annotation_frequencies`), and where
  the consortium has cases, blended with their counts (federation/tasks/diagnosis/).
- ``bg(t)``: the same probability for a patient with a random annotated disease, the
  mean of ``F[:, t]`` over annotated diseases (smoothed).

Observed term t: ``P(t | d) = F[d, t]`` when d is annotated at or below t. Otherwise
the patient is more specific than what d is known for (or it is a chance finding):
the best ancestor a of t that d holds, ``F[d, a] * bg(t) / bg(a)`` (how often an "a"
patient is a "t" patient), times `off_match`; never below ``floor * bg(t)``.
``LR = P(t | d) / bg(t)``.

Excluded term t: ``LR = (1 - P) / (1 - bg(t))`` with ``P = min(F[d, t], max_excluded)``:
a disease that nearly always shows t is penalised when the clinician ruled t out.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import sparse

from modalities.hpo import HpoIndex, load_hpo_index
from models.knowledge import load_annotations

BACKGROUND_SMOOTHING = 0.5
"""Pseudo-diseases added to the background, so a term no disease holds still has bg(t) > 0."""


@dataclass(frozen=True)
class LikelihoodSettings:
    """The ranker's few constants; each experiment config says how its values were chosen."""

    off_match: float = 0.1
    floor: float = 0.02
    max_excluded: float = 0.9
    empty_frequency: float = 1.0


def propagate(rows: np.ndarray, terms: np.ndarray, values: np.ndarray, n_rows: int, hpo: HpoIndex) -> sparse.csr_matrix:
    """[n_rows, n_terms]: each (row, term, value) also set at every ancestor of the term, keeping the highest value."""
    lengths = np.diff(hpo.ancestor_indptr)[terms]
    starts = hpo.ancestor_indptr[terms]
    owner = np.repeat(np.arange(len(terms)), lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    columns = hpo.ancestor_indices[np.repeat(starts, lengths) + within]
    r, c, v = rows[owner], columns, values[owner]
    order = np.lexsort((-v, c, r))  # per (row, column), the highest value first
    r, c, v = r[order], c[order], v[order]
    first = np.ones(len(r), dtype=bool)
    first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    return sparse.csr_matrix((v[first].astype(np.float32), (r[first], c[first])), shape=(n_rows, hpo.size))


@lru_cache(maxsize=4)
def annotation_frequencies(
    disease_ids: tuple[str, ...], annotation_path: str | None = None, databases: tuple[str, ...] = ("OMIM",), empty_frequency: float = 1.0
) -> sparse.csr_matrix:
    """F [len(disease_ids), n_terms] from phenotype.hpoa; an unannotated disease's row is empty."""
    hpo = load_hpo_index()
    annotations = load_annotations(annotation_path, databases, empty_frequency)
    position = annotations.position
    rows, terms, values = [], [], []
    for i, disease in enumerate(disease_ids):
        j = position.get(disease)
        if j is None:
            continue
        rows.append(np.full(len(annotations.terms[j]), i))
        terms.append(annotations.terms[j])
        values.append(annotations.frequencies[j])
    if not rows:
        return sparse.csr_matrix((len(disease_ids), hpo.size), dtype=np.float32)
    return propagate(np.concatenate(rows), np.concatenate(terms), np.concatenate(values), len(disease_ids), hpo)


def background(frequencies: sparse.csr_matrix) -> np.ndarray:
    """bg(t) [n_terms]: the mean of F[:, t] over the diseases that have any annotation, smoothed."""
    annotated = np.diff(frequencies.indptr) > 0
    totals = np.asarray(frequencies[annotated].sum(axis=0)).ravel()
    n = int(annotated.sum())
    return ((totals + BACKGROUND_SMOOTHING) / (n + BACKGROUND_SMOOTHING)).astype(np.float32)


def term_log_ratios(
    frequencies: sparse.csr_matrix, terms: np.ndarray, bg: np.ndarray, settings: LikelihoodSettings, hpo: HpoIndex | None = None, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """(observed, excluded) log likelihood ratios, each [len(terms), n_diseases] float32.

    `terms`: distinct HPO indices; `frequencies`: F [n_diseases, n_terms]. Diseases are
    taken `chunk` at a time, so memory stays near chunk x (terms x ancestors).
    """
    hpo = hpo or load_hpo_index()
    terms = np.asarray(terms, dtype=np.int64)
    lengths = np.diff(hpo.ancestor_indptr)[terms]
    starts = hpo.ancestor_indptr[terms]
    owner = np.repeat(np.arange(len(terms)), lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ancestors = hpo.ancestor_indices[np.repeat(starts, lengths) + within]
    is_self = ancestors == terms[owner]
    scale = (bg[terms][owner] / bg[ancestors]) * np.where(is_self, 1.0, settings.off_match)
    segment_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    floor = settings.floor * bg[terms]
    observed = np.empty((len(terms), frequencies.shape[0]), np.float32)
    excluded = np.empty_like(observed)
    columns = frequencies.tocsc()
    exact_cols = columns[:, terms]
    ancestor_cols = columns[:, ancestors]
    for start in range(0, frequencies.shape[0], chunk):
        stop = min(start + chunk, frequencies.shape[0])
        block = ancestor_cols[start:stop].toarray() * scale[None, :].astype(np.float32)
        best = np.maximum.reduceat(block, segment_starts, axis=1) if len(terms) else block[:, :0]
        p = np.maximum(best, floor[None, :])
        observed[:, start:stop] = (np.log(p) - np.log(bg[terms])[None, :]).T
        exact = np.minimum(exact_cols[start:stop].toarray(), settings.max_excluded)
        excluded[:, start:stop] = (np.log1p(-exact) - np.log1p(-np.minimum(bg[terms], settings.max_excluded))[None, :]).T
    return observed, excluded


def signed_term_sets(terms: Sequence[np.ndarray]) -> np.ndarray:
    """The distinct HPO indices in patients' signed term arrays (index + 1, negative when excluded, 0 padding)."""
    if not len(terms):
        return np.empty(0, np.int64)
    flat = np.abs(np.concatenate([np.asarray(t, dtype=np.int64).ravel() for t in terms]))
    return np.unique(flat[flat > 0] - 1)
