"""Disease profiles the consortium builds from its diagnosed training cases, shared as aggregates.

phenotype.hpoa lags the literature: newer OMIM entries have no annotations, and many
have a handful. Each site counts, per diagnosis, its training cases, how many of them
show each HPO term (or a more specific one), and the causative genes their reports
name. Only these counts leave a site, k-suppressed (a cell below `min_count` is sent
as 0), or, with `secure: true`, summed by secure aggregation (federation/privacy/
secagg.py) so the coordinator sees only the consortium's totals, suppressed there.
Validation and test patients never contribute.

A label disease's phenotype frequencies then blend the cases with its annotations,
``F = (count + m * F_annotations) / (cases + m)`` (`prior_cases` = m: how many cases the
annotation is worth); a disease without annotations gets ``count / (cases + m0)``.
A gene named by at least `min_count` cases becomes one of the disease's genes.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from federation.tasks.diagnosis.cohort import Patients
from modalities.hpo import HpoIndex, load_hpo_index
from models.phenotype_likelihood import propagate


@dataclass(frozen=True)
class CaseCounts:
    """Per label disease: training cases [L], term counts [L, n_terms], gene counts [L, n_genes] (HPO gene vocabulary)."""

    cases: np.ndarray
    terms: sparse.csr_matrix
    genes: sparse.csr_matrix

    def __add__(self, other: CaseCounts) -> CaseCounts:
        return CaseCounts(self.cases + other.cases, (self.terms + other.terms).tocsr(), (self.genes + other.genes).tocsr())

    def suppressed(self, min_count: int) -> CaseCounts:
        """Cells below `min_count` sent as 0; a disease with fewer cases is not sent at all."""
        keep = self.cases >= min_count
        return CaseCounts(np.where(keep, self.cases, 0), _at_least(self.terms, keep, min_count), _at_least(self.genes, keep, min_count))


def empty_counts(n_labels: int, hpo: HpoIndex | None = None) -> CaseCounts:
    hpo = hpo or load_hpo_index()
    return CaseCounts(np.zeros(n_labels, np.int64), sparse.csr_matrix((n_labels, hpo.size), dtype=np.float32), sparse.csr_matrix((n_labels, len(hpo.gene_symbols)), dtype=np.float32))


def case_closures(terms: list[np.ndarray], hpo: HpoIndex | None = None) -> sparse.csr_matrix:
    """[n_patients, n_terms] binary: each patient's observed terms and their ancestors."""
    hpo = hpo or load_hpo_index()
    observed = [np.asarray(t)[np.asarray(t) > 0] - 1 for t in terms]
    rows = np.repeat(np.arange(len(observed)), [len(o) for o in observed])
    flat = np.concatenate(observed).astype(np.int64) if observed else np.empty(0, np.int64)
    return propagate(rows, flat, np.ones(len(flat), np.float32), len(observed), hpo)


def gene_indicator(genes: list[tuple[str, ...]], hpo: HpoIndex | None = None) -> tuple[sparse.csr_matrix, int]:
    """([n_patients, n_genes] reported causative genes, how many named genes are outside the vocabulary)."""
    hpo = hpo or load_hpo_index()
    position = {g: i for i, g in enumerate(hpo.gene_symbols)}
    rows, cols, unknown = [], [], 0
    for i, named in enumerate(genes):
        for gene in set(named):
            if gene in position:
                rows.append(i)
                cols.append(position[gene])
            else:
                unknown += 1
    data = np.ones(len(rows), np.float32)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(genes), len(hpo.gene_symbols))), unknown


def count_cases(patients: Patients, n_labels: int, hpo: HpoIndex | None = None) -> CaseCounts:
    """What a site counts over its own training cases."""
    hpo = hpo or load_hpo_index()
    membership = sparse.csr_matrix((np.ones(len(patients), np.float32), (patients.labels, np.arange(len(patients)))), shape=(n_labels, len(patients)))
    genes, _ = gene_indicator(patients.genes, hpo)
    return CaseCounts(
        np.bincount(patients.labels, minlength=n_labels).astype(np.int64),
        (membership @ case_closures(patients.terms, hpo)).tocsr(),
        (membership @ genes).tocsr(),
    )


def share(per_site: Mapping[str, CaseCounts], min_count: int, secure: bool = False) -> CaseCounts:
    """The consortium's counts as the coordinator receives them: per-site k-suppressed sums, or a secure sum suppressed."""
    counts = list(per_site.values())
    if not secure:
        total = counts[0].suppressed(min_count)
        for c in counts[1:]:
            total = total + c.suppressed(min_count)
        return total
    return secure_total(per_site).suppressed(min_count)


def site_view(own: CaseCounts, shared: CaseCounts, min_count: int, secure: bool = False) -> CaseCounts:
    """What one site ranks with: the consortium's shared counts with its own put back in full.

    A site's own counts never needed suppressing from itself. Shared in the clear, the
    total holds the site's suppressed share, which is swapped for its whole counts;
    summed securely, a cell the total lost to suppression is below k, so the site's
    own count is the better (and never a smaller) value there.
    """
    if secure:
        return CaseCounts(np.maximum(shared.cases, own.cases), shared.terms.maximum(own.terms).tocsr(), shared.genes.maximum(own.genes).tocsr())
    mine = own.suppressed(min_count)
    return CaseCounts(
        shared.cases - mine.cases + own.cases,
        (shared.terms - mine.terms + own.terms).tocsr(),
        (shared.genes - mine.genes + own.genes).tocsr(),
    )


def secure_total(per_site: Mapping[str, CaseCounts]) -> CaseCounts:
    """The sum of every site's counts through the secure-aggregation protocol: no site's own counts are revealed."""
    from federation.privacy.secagg import SecAggClient, SecAggServer, run_secure_aggregation

    if len(per_site) < 2:
        raise ValueError(f"profiles.secure needs at least 2 sites to hide each one's counts, got {len(per_site)}")
    first = next(iter(per_site.values()))
    clients = [SecAggClient(site, _as_tensors(c), {"cases": 1, "terms": 1, "genes": 1}) for site, c in per_site.items()]
    # The clip bounds the fixed-point codec: the largest site's norm keeps counts unclipped and rounding below 0.5.
    largest = max(float(np.sqrt(sum(float((t.double() ** 2).sum()) for t in c.values()))) for c in map(_as_tensors, per_site.values()))
    server = SecAggServer(threshold=len(clients), clip=max(largest * 1.01, 1.0), max_count=1, min_group_size=2)
    total = run_secure_aggregation(clients, server, round_=0).weighted
    return CaseCounts(
        np.rint(total["cases"].numpy()).astype(np.int64),
        sparse.csr_matrix(np.rint(total["terms"].numpy()).astype(np.float32)),
        sparse.csr_matrix(np.rint(total["genes"].numpy()).astype(np.float32).reshape(first.genes.shape)),
    )


def _as_tensors(counts: CaseCounts) -> dict[str, torch.Tensor]:
    return {
        "cases": torch.from_numpy(counts.cases.astype(np.float32)),
        "terms": torch.from_numpy(counts.terms.toarray()),
        "genes": torch.from_numpy(counts.genes.toarray()),
    }


def _at_least(matrix: sparse.csr_matrix, keep_rows: np.ndarray, min_count: int) -> sparse.csr_matrix:
    out = sparse.diags(keep_rows.astype(np.float32)) @ matrix
    out = out.tocsr()
    out.data[out.data < min_count] = 0.0
    out.eliminate_zeros()
    return out


def blended_frequencies(annotation_rows: sparse.csr_matrix, counts: CaseCounts, prior_cases: float, unannotated_prior: float = 1.0) -> sparse.csr_matrix:
    """F of the label diseases [L, n_terms]: annotations blended with the cases' term frequencies."""
    annotated = np.diff(annotation_rows.indptr) > 0
    m = np.where(annotated, prior_cases, unannotated_prior).astype(np.float32)
    denominator = counts.cases.astype(np.float32) + np.where(annotated | (counts.cases > 0), m, 1.0)
    numerator = counts.terms + sparse.diags(np.where(annotated, m, 0.0).astype(np.float32)) @ annotation_rows
    return (sparse.diags(1.0 / denominator) @ numerator).tocsr().astype(np.float32)


def leave_one_out(counts: CaseCounts, label: int, closure: sparse.csr_matrix, genes: sparse.csr_matrix) -> CaseCounts:
    """The counts without one training patient's own contribution (row `label` only), for training without leakage."""
    terms = counts.terms.tolil(copy=True)
    terms[label] = np.maximum(counts.terms[label].toarray() - closure.toarray(), 0)
    gene_rows = counts.genes.tolil(copy=True)
    gene_rows[label] = np.maximum(counts.genes[label].toarray() - genes.toarray(), 0)
    cases = counts.cases.copy()
    cases[label] = max(cases[label] - 1, 0)
    return CaseCounts(cases, terms.tocsr(), gene_rows.tocsr())
