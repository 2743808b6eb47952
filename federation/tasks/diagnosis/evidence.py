"""The evidence tables one approach ranks with: phenotype, genotype and case-count prior per candidate disease.

Candidates are every annotated disease of the annotation file plus the label diseases
(the open setting); the closed label set is a view of the same ranking. Public
knowledge fills every column; an approach that has case counts (its own site's, the
consortium's shared ones, or the pooled data's) rewrites the label diseases' columns
from them (case_profiles.py). A training patient is scored against its own diagnosis
without its own contribution to the counts (leave-one-out), so training never
rewards a case for matching itself.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from federation.tasks.diagnosis.case_profiles import CaseCounts, blended_frequencies, case_closures, gene_indicator, leave_one_out
from federation.tasks.diagnosis.cohort import Patients
from modalities.hpo import load_hpo_index
from modalities.phenotypes import pad_sequences
from models.genotype_likelihood import GenotypeSettings, annotated_disease_genes, genotype_log_ratios, recessive_only
from models.knowledge import KnowledgeRanker, load_annotations
from models.phenotype_likelihood import LikelihoodSettings, annotation_frequencies, background, term_log_ratios


@dataclass(frozen=True)
class ProfileSettings:
    prior_cases: float = 5.0        # how many cases the annotation of a disease is worth
    unannotated_prior: float = 1.0  # pseudo-cases of an unannotated disease's frequencies
    min_count: int = 2              # k: no shared cell below it
    secure: bool = False            # sum the sites' counts by secure aggregation


class PublicKnowledge:
    """Annotation-only tables over every candidate, computed once per cohort and reused by every approach."""

    def __init__(
        self, labels: tuple[str, ...], terms: np.ndarray, likelihood: LikelihoodSettings, genotype: GenotypeSettings,
        annotation_path: str | None = None, databases=("OMIM",), pathogenicity=None,
    ):
        self.hpo = load_hpo_index()
        annotated = load_annotations(annotation_path, tuple(databases)).disease_ids
        self.candidates = tuple(sorted(set(annotated) | set(labels)))
        position = {d: i for i, d in enumerate(self.candidates)}
        self.label_columns = np.array([position[d] for d in labels], dtype=np.int64)
        self.likelihood, self.genotype = likelihood, genotype
        self.pathogenicity = pathogenicity  # None: in-silico scores (models/genotype_likelihood.py)
        self.frequencies = annotation_frequencies(self.candidates, annotation_path, tuple(databases), likelihood.empty_frequency)
        self.bg = background(self.frequencies)
        self.terms = np.asarray(terms, dtype=np.int64)
        self.row_of = {int(t): i for i, t in enumerate(self.terms)}
        self.observed, self.excluded = term_log_ratios(self.frequencies, self.terms, self.bg, likelihood, self.hpo)
        self.genes = annotated_disease_genes(self.candidates, self.hpo)
        self.recessive = recessive_only(self.candidates)
        self.label_frequencies = self.frequencies[self.label_columns]
        self.label_genes = self.genes[self.label_columns]
        self.resnik = KnowledgeRanker(self.candidates, annotation_path, tuple(databases))
        self._similarity: dict[bytes, np.ndarray] = {}

    def similarity(self, terms: list[np.ndarray]) -> np.ndarray:
        """[N, C] Resnik best-match similarity of each report to every candidate, as a z-score over the annotated
        candidates (so its weight means the same for a short report and a long one); a disease without
        annotations scores 0, the average, and is left to its case profile. Cached per report: every approach
        scores the same patients."""
        missing = [t for t in terms if t.tobytes() not in self._similarity]
        for start in range(0, len(missing), 256):
            part = missing[start : start + 256]
            padded = pad_sequences([torch.from_numpy(np.asarray(t, np.int64)) for t in part])
            raw = self.resnik.scores(padded).numpy()
            for t, row in zip(part, raw):
                self._similarity[t.tobytes()] = standardised_similarity(row, self.resnik.known)
        if not terms:
            return np.zeros((0, len(self.candidates)), np.float32)
        return np.stack([self._similarity[t.tobytes()] for t in terms])


def standardised_similarity(row: np.ndarray, known: np.ndarray) -> np.ndarray:
    values = row[known]
    spread = values.std()
    out = np.zeros(len(row), np.float32)
    if spread > 0:
        out[known] = (values - values.mean()) / spread
    return out


@dataclass
class Evidence:
    """One approach's tables: public log LRs [Q, C] for every candidate, the label diseases' own [Q, L] from
    their case counts (the only columns counts change), prior [C], every candidate's genes, the counts."""

    observed: np.ndarray
    excluded: np.ndarray
    label_observed: np.ndarray
    label_excluded: np.ndarray
    label_columns: np.ndarray
    prior: np.ndarray
    genes: sparse.csr_matrix
    counts: CaseCounts | None

    def column(self, candidate: int) -> tuple[np.ndarray, np.ndarray]:
        """(observed [Q], excluded [Q]) log LRs of one candidate disease."""
        where = np.flatnonzero(self.label_columns == candidate)
        if len(where):
            return self.label_observed[:, where[0]], self.label_excluded[:, where[0]]
        return self.observed[:, candidate], self.excluded[:, candidate]


def evidence_for(public: PublicKnowledge, counts: CaseCounts | None, settings: ProfileSettings) -> Evidence:
    """Public knowledge, with the label diseases' columns rewritten from `counts` where given."""
    prior = np.zeros(len(public.candidates), np.float32)
    columns = public.label_columns
    if counts is None:
        return Evidence(
            public.observed, public.excluded, public.observed[:, columns], public.excluded[:, columns], columns,
            prior, public.genes, None,
        )
    frequencies = blended_frequencies(public.label_frequencies, counts, settings.prior_cases, settings.unannotated_prior)
    label_observed, label_excluded = term_log_ratios(frequencies, public.terms, public.bg, public.likelihood, public.hpo)
    label_genes = _with_case_genes(public.label_genes, counts, settings.min_count)
    genes = public.genes.tolil(copy=True)
    genes[columns] = label_genes
    prior[columns] = np.log1p(counts.cases.astype(np.float32))
    return Evidence(public.observed, public.excluded, label_observed, label_excluded, columns, prior, genes.tocsr(), counts)


def _with_case_genes(annotated: sparse.csr_matrix, counts: CaseCounts, min_count: int) -> sparse.csr_matrix:
    named = (counts.genes >= max(min_count, 1)).astype(np.float32)
    out = ((annotated + named) > 0).astype(np.float32)
    return sparse.csr_matrix(out)


@dataclass
class Features:
    """What the scorer reads for a set of patients: padded term rows into the evidence tables, genotype, and
    for training patients their own diagnosis's leave-one-out values (`true_*`)."""

    observed_rows: np.ndarray   # [N, T] row of the tables, -1 padding
    excluded_rows: np.ndarray   # [N, U]
    genotype: np.ndarray        # [N, C]
    truth: np.ndarray           # [N] candidate column of the diagnosis
    similarity: np.ndarray      # [N, C] Resnik similarity, standardised (PublicKnowledge.similarity)
    true_observed: np.ndarray | None = None  # [N, T] leave-one-out log LR of each observed term under the diagnosis
    true_excluded: np.ndarray | None = None  # [N, U]
    true_genotype: np.ndarray | None = None  # [N]
    true_prior: np.ndarray | None = None     # [N]


def features_for(public: PublicKnowledge, evidence: Evidence, patients: Patients, columns: tuple[str, ...], settings: ProfileSettings, leave_out: bool, counts: Counter | None = None) -> Features:
    observed = [[public.row_of[int(t) - 1] for t in p if t > 0] for p in patients.terms]
    excluded = [[public.row_of[int(-t) - 1] for t in p if t < 0] for p in patients.terms]
    genotype = (
        genotype_log_ratios(patients.variants, columns, evidence.genes, public.genotype, counts, public.pathogenicity, public.recessive)
        if columns else np.zeros((len(patients), len(public.candidates)), np.float32)
    )
    truth = public.label_columns[patients.labels]
    out = Features(_pad(observed), _pad(excluded), genotype, truth, public.similarity(patients.terms))
    if leave_out and evidence.counts is not None:
        _leave_one_out(out, public, evidence, patients, columns, settings)
    return out


def _leave_one_out(out: Features, public: PublicKnowledge, evidence: Evidence, patients: Patients, columns, settings: ProfileSettings) -> None:
    closures = case_closures(patients.terms, public.hpo)
    genes, _ = gene_indicator(patients.genes, public.hpo)
    n, t, u = len(patients), out.observed_rows.shape[1], out.excluded_rows.shape[1]
    out.true_observed, out.true_excluded = np.zeros((n, t), np.float32), np.zeros((n, u), np.float32)
    out.true_genotype, out.true_prior = np.zeros(n, np.float32), np.zeros(n, np.float32)
    for i, label in enumerate(patients.labels):
        own = leave_one_out(_row(evidence.counts, int(label)), 0, closures[i], genes[i])  # only the diagnosis's row changes
        row = blended_frequencies(public.label_frequencies[label], own, settings.prior_cases, settings.unannotated_prior)
        seen, ruled_out = out.observed_rows[i], out.excluded_rows[i]
        seen, ruled_out = seen[seen >= 0], ruled_out[ruled_out >= 0]
        terms = public.terms[np.concatenate([seen, ruled_out])]
        if len(terms):
            obs, exc = term_log_ratios(row, terms, public.bg, public.likelihood, public.hpo)
            k = len(seen)
            out.true_observed[i, :k] = obs[:k, 0]
            out.true_excluded[i, : len(terms) - k] = exc[k:, 0]
        gene_row = _with_case_genes(public.label_genes[label], own, settings.min_count)
        if columns:
            recessive = public.recessive[public.label_columns[label] : public.label_columns[label] + 1]
            out.true_genotype[i] = genotype_log_ratios([patients.variants[i]], columns, gene_row, public.genotype, None, public.pathogenicity, recessive)[0, 0]
        out.true_prior[i] = np.log1p(own.cases[0])


def _row(counts: CaseCounts, label: int) -> CaseCounts:
    return CaseCounts(counts.cases[label : label + 1], counts.terms[label], counts.genes[label])


def _pad(rows: list[list[int]]) -> np.ndarray:
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), max(width, 1)), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out
