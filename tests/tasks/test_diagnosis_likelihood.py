"""Likelihood-ratio evidence: phenotype (models/phenotype_likelihood.py), genotype
(models/genotype_likelihood.py), and the ranking metrics (federation/tasks/diagnosis/metrics.py)."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy import sparse

from federation.tasks.diagnosis.metrics import paired_bootstrap, patient_hits, ranks
from models.genotype_likelihood import GenotypeSettings, annotated_disease_genes, genotype_log_ratios, recessive_only, row_pathogenicity
from models.knowledge import load_annotations
from models.phenotype_likelihood import (
    LikelihoodSettings,
    annotation_frequencies,
    background,
    propagate,
    signed_term_sets,
    term_log_ratios,
)

SETTINGS = LikelihoodSettings(off_match=0.1, floor=0.02, max_excluded=0.9, empty_frequency=1.0)
COLUMNS = ("valid", "gene", "consequence", "impact", "zygosity", "af_neglog10", "af_missing", "CADD", "CADD_missing", "REVEL", "REVEL_missing")
HIGH = 4
MARFAN, CYSTIC_FIBROSIS, UNKNOWN_DISEASE = "OMIM:154700", "OMIM:219700", "OMIM:999999"


@pytest.fixture(scope="module")
def annotations():
    return load_annotations()


@pytest.fixture(scope="module")
def public(annotations):
    """(F over every annotated disease, bg): the public tables the ranker uses."""
    frequencies = annotation_frequencies(annotations.disease_ids)
    return frequencies, background(frequencies)


def _descendants(hpo, term: int) -> np.ndarray:
    """Every term strictly below `term` (the index only stores ancestors)."""
    owner = np.repeat(np.arange(hpo.size), np.diff(hpo.ancestor_indptr))
    below = np.unique(owner[hpo.ancestor_indices == term])
    return below[below != term]


def _variant(hpo, gene: str | None, cadd: float | None = None, revel: float | None = None, impact: int = 0, af: float | None = 1e-5) -> np.ndarray:
    """One candidate row in the variant reader's layout; None = missing (gene None = outside the vocabulary)."""
    values = {
        "valid": 1.0,
        "gene": 0.0 if gene is None else float(hpo.gene_symbols.index(gene) + 1),
        "consequence": 0.0,
        "impact": float(impact),
        "zygosity": 1.0,
        "af_neglog10": 0.0 if af is None else -math.log10(af) / 6.0,
        "af_missing": 1.0 if af is None else 0.0,
        "CADD": 0.0 if cadd is None else cadd,
        "CADD_missing": 1.0 if cadd is None else 0.0,
        "REVEL": 0.0 if revel is None else revel,
        "REVEL_missing": 1.0 if revel is None else 0.0,
    }
    return np.array([[values[c] for c in COLUMNS]], dtype=np.float32)


# ---------------------------------------------------------------- propagate


def test_propagate_sets_value_at_every_ancestor_and_keeps_the_highest(hpo):
    # Prepare: two seizure subtypes in one row (they share the "Seizure" ancestors), one in another row
    tonic_clonic = hpo.position["HP:0002069"]
    arachnodactyly = hpo.position["HP:0001166"]
    seizure = hpo.position["HP:0001250"]
    rows = np.array([0, 0, 2])
    terms = np.array([tonic_clonic, arachnodactyly, tonic_clonic])
    values = np.array([0.3, 0.8, 0.5], dtype=np.float32)

    # Execute
    matrix = propagate(rows, terms, values, 3, hpo).toarray()

    # Assert: each term's ancestors hold at least its value; shared ones hold the higher value
    only_seizure = set(hpo.ancestors(tonic_clonic)) - set(hpo.ancestors(arachnodactyly))
    shared = set(hpo.ancestors(tonic_clonic)) & set(hpo.ancestors(arachnodactyly))
    assert seizure in only_seizure and shared  # "All" and "Phenotypic abnormality" at least
    for a in only_seizure:
        assert matrix[0, a] == pytest.approx(0.3)
    for a in shared:
        assert matrix[0, a] == pytest.approx(0.8)
    for a in hpo.ancestors(arachnodactyly):
        assert matrix[0, a] == pytest.approx(0.8)
    assert np.count_nonzero(matrix[0]) == len(only_seizure | set(hpo.ancestors(arachnodactyly)))
    assert not matrix[1].any()  # a row without entries stays empty
    assert set(np.flatnonzero(matrix[2])) == set(hpo.ancestors(tonic_clonic))
    assert np.allclose(matrix[2, hpo.ancestors(tonic_clonic)], 0.5)


def test_propagate_keeps_highest_of_two_values_on_the_same_term(hpo):
    # Prepare: the same term twice in one row, the higher value second
    seizure = hpo.position["HP:0001250"]

    # Execute
    matrix = propagate(np.array([0, 0]), np.array([seizure, seizure]), np.array([0.2, 0.9], np.float32), 1, hpo)

    # Assert
    assert matrix[0, seizure] == pytest.approx(0.9)
    assert matrix.nnz == len(hpo.ancestors(seizure))


def test_annotation_frequencies_rows_follow_disease_order_and_unannotated_is_empty(annotations, hpo):
    # Prepare
    marfan = annotations.position[MARFAN]
    frequencies = dict(zip(annotations.terms[marfan].tolist(), annotations.frequencies[marfan].tolist()))

    # Execute
    F = annotation_frequencies((UNKNOWN_DISEASE, MARFAN))

    # Assert: the unknown disease's row is empty; Marfan's annotated terms hold at least their frequency
    assert F.shape == (2, hpo.size)
    assert F[0].nnz == 0
    row = F[1].toarray().ravel()
    for term, frequency in frequencies.items():
        assert row[term] >= frequency - 1e-6
    assert row[hpo.position["HP:0000001"]] == pytest.approx(max(frequencies.values()))


def test_background_is_smoothed_mean_over_annotated_rows_only(hpo):
    # Prepare: two annotated rows and one empty row
    F = sparse.csr_matrix(np.array([[1.0, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32))

    # Execute
    bg = background(F)

    # Assert: the empty row does not dilute the mean; a term no disease holds is still above 0
    assert bg == pytest.approx(np.array([(2 + 0.5) / 2.5, (0.5 + 0.5) / 2.5, 0.5 / 2.5]))


# ---------------------------------------------------------------- term_log_ratios


def _certain_rare_term(annotations, public, disease: str) -> int:
    """A term `disease` is annotated with at frequency 1.0 that few diseases share."""
    _, bg = public
    j = annotations.position[disease]
    candidates = [int(t) for t, f in zip(annotations.terms[j], annotations.frequencies[j]) if f == 1.0 and bg[t] < 0.2]
    assert candidates, f"{disease} has no annotation at frequency 1.0"
    return min(candidates, key=lambda t: bg[t])


def test_observed_annotated_term_favours_the_disease_that_has_it(annotations, public, hpo):
    # Prepare: a Marfan term at frequency 1.0, and an annotated disease that lacks it
    frequencies, bg = public
    marfan = annotations.position[MARFAN]
    term = _certain_rare_term(annotations, public, MARFAN)
    lacking = next(i for i in range(frequencies.shape[0]) if frequencies[i, term] == 0 and frequencies[i].nnz)

    # Execute
    observed, _ = term_log_ratios(frequencies, np.array([term]), bg, SETTINGS, hpo)

    # Assert: exact match is log(F / bg); the other disease scores lower
    assert observed.shape == (1, frequencies.shape[0])
    assert observed[0, marfan] == pytest.approx(math.log(1.0 / bg[term]), rel=1e-4)
    assert observed[0, marfan] > 0
    assert observed[0, lacking] < observed[0, marfan]
    assert observed[0, lacking] < 0


def test_excluded_term_the_disease_always_shows_is_penalised(annotations, public, hpo):
    # Prepare
    frequencies, bg = public
    marfan = annotations.position[MARFAN]
    term = _certain_rare_term(annotations, public, MARFAN)
    lacking = next(i for i in range(frequencies.shape[0]) if frequencies[i, term] == 0 and frequencies[i].nnz)

    # Execute
    _, excluded = term_log_ratios(frequencies, np.array([term]), bg, SETTINGS, hpo)

    # Assert: P is capped at max_excluded, so the penalty is finite; a disease without the term gains a little
    expected = math.log(1 - SETTINGS.max_excluded) - math.log(1 - bg[term])
    assert excluded[0, marfan] == pytest.approx(expected, rel=1e-4)
    assert np.isfinite(excluded[0, marfan]) and excluded[0, marfan] < 0
    assert excluded[0, lacking] > 0


def test_unannotated_disease_row_gets_log_floor_for_every_observed_term(annotations, public, hpo):
    # Prepare: a real annotated row plus an all-zero row
    _, bg = public
    F = annotation_frequencies((MARFAN, UNKNOWN_DISEASE))
    j = annotations.position[MARFAN]
    terms = np.unique(np.concatenate([annotations.terms[j][:5], [hpo.position["HP:0001250"], hpo.position["HP:0000001"]]]))

    # Execute
    observed, excluded = term_log_ratios(F, terms, bg, SETTINGS, hpo)

    # Assert: no evidence at all is the floor, and excluding a term it never shows is neutral-ish (never a penalty)
    assert np.allclose(observed[:, 1], math.log(SETTINGS.floor), atol=1e-5)
    assert (excluded[:, 1] >= 0).all()
    assert (observed[:, 0] > math.log(SETTINGS.floor)).all()


def test_more_specific_term_scores_between_exact_match_and_floor(public, hpo):
    # Prepare: a term and one of its descendants; row 0 annotated at the descendant, row 1 only at the
    # term, row 2 empty, all at the same frequency
    _, bg = public
    parent = hpo.position["HP:0001250"]  # Seizure
    child = hpo.position["HP:0002069"]  # Bilateral tonic-clonic seizure, below it
    assert parent in hpo.ancestors(child)
    f = 0.8
    F = propagate(np.array([0, 1]), np.array([child, parent]), np.array([f, f], np.float32), 3, hpo)

    # Execute
    observed, _ = term_log_ratios(F, np.array([child]), bg, SETTINGS, hpo)

    # Assert: exact > more specific than known > floor, and the middle one is F(parent) * off_match / bg(parent)
    exact, specific, empty = observed[0]
    assert exact > specific > empty
    assert exact == pytest.approx(math.log(f / bg[child]), rel=1e-4)
    assert specific == pytest.approx(math.log(f * SETTINGS.off_match / bg[parent]), rel=1e-4)
    assert empty == pytest.approx(math.log(SETTINGS.floor), abs=1e-5)


def test_term_log_ratios_do_not_depend_on_the_chunk_size(public, hpo):
    # Prepare
    frequencies, bg = public
    rows = frequencies[:700]
    terms = np.array([hpo.position[t] for t in ("HP:0001250", "HP:0001166", "HP:0000118", "HP:0002069")])

    # Execute
    whole = term_log_ratios(rows, terms, bg, SETTINGS, hpo, chunk=1024)
    chunked = term_log_ratios(rows, terms, bg, SETTINGS, hpo, chunk=100)

    # Assert
    assert np.array_equal(whole[0], chunked[0]) and np.array_equal(whole[1], chunked[1])


def test_observed_descendant_never_below_floor_for_any_disease(public, hpo):
    # Prepare: a deep term and descendants of a common one
    frequencies, bg = public
    seizure = hpo.position["HP:0001250"]
    terms = np.concatenate([[seizure], _descendants(hpo, seizure)[:20]])

    # Execute
    observed, _ = term_log_ratios(frequencies[:2000], terms, bg, SETTINGS, hpo)

    # Assert
    assert np.isfinite(observed).all()
    assert observed.min() >= math.log(SETTINGS.floor) - 1e-5


def test_signed_term_sets_gives_distinct_indices_of_observed_and_excluded():
    # Prepare: index + 1, negative = excluded, 0 = padding
    terms = [np.array([3, -5, 0]), np.array([-3, 7]), np.array([], dtype=np.int64)]

    # Execute / Assert
    assert signed_term_sets(terms).tolist() == [2, 4, 6]
    assert signed_term_sets([]).tolist() == []


# ---------------------------------------------------------------- genotype


@pytest.fixture(scope="module")
def disease_genes(hpo):
    ids = (MARFAN, CYSTIC_FIBROSIS, UNKNOWN_DISEASE)
    return ids, annotated_disease_genes(ids, hpo)


def test_annotated_disease_genes_links_known_genes(disease_genes, hpo):
    # Execute (fixture) / Assert
    _, genes = disease_genes
    symbols = [{hpo.gene_symbols[j] for j in genes[i].indices} for i in range(3)]
    assert "FBN1" in symbols[0] and "FBN1" not in symbols[1]
    assert "CFTR" in symbols[1]
    assert symbols[2] == set()
    assert set(genes.data.tolist()) == {1.0}


def test_damaging_variant_in_disease_gene_raises_that_disease_only(disease_genes, hpo):
    # Prepare: a rare FBN1 variant with high CADD and REVEL
    _, genes = disease_genes
    settings = GenotypeSettings()
    rows = _variant(hpo, "FBN1", cadd=35.0, revel=0.95)

    # Execute
    out = genotype_log_ratios([rows], COLUMNS, genes, settings)

    # Assert: Marfan gets miss + hit * s, CF (other genes) gets log(miss), no-gene disease 0
    s = (35.0 / 40.0 + 0.95) / 2
    assert out.shape == (1, 3)
    assert out[0, 0] == pytest.approx(math.log(settings.miss + settings.hit_ratio * s), rel=1e-5)
    assert out[0, 0] > 0
    assert out[0, 1] == pytest.approx(math.log(settings.miss))
    assert out[0, 2] == 0.0


def test_common_variant_is_penalised(disease_genes, hpo):
    # Prepare: the same FBN1 variant, rare and with AF 5 % (above common_af)
    _, genes = disease_genes
    settings = GenotypeSettings()
    rare = _variant(hpo, "FBN1", cadd=35.0, revel=0.95, af=1e-5)
    common = _variant(hpo, "FBN1", cadd=35.0, revel=0.95, af=0.05)

    # Execute
    s_rare, s_common = row_pathogenicity(np.vstack([rare, common]), COLUMNS, settings)
    out = genotype_log_ratios([rare, common], COLUMNS, genes, settings)

    # Assert
    assert s_common == pytest.approx(s_rare * settings.common_penalty, rel=1e-5)
    assert out[1, 0] < out[0, 0]
    assert out[1, 0] == pytest.approx(math.log(settings.miss + settings.hit_ratio * s_common), rel=1e-5)


def test_missing_allele_frequency_is_not_treated_as_common(hpo):
    # Prepare: af_neglog10 = 0 would read as AF 1.0, but af_missing says it is unknown
    settings = GenotypeSettings()
    missing = _variant(hpo, "FBN1", cadd=35.0, revel=0.95, af=None)
    rare = _variant(hpo, "FBN1", cadd=35.0, revel=0.95, af=1e-5)

    # Execute
    s = row_pathogenicity(np.vstack([missing, rare]), COLUMNS, settings)

    # Assert
    assert s[0] == pytest.approx(s[1])


def test_gene_outside_vocabulary_is_counted_and_not_pooled(disease_genes, hpo):
    # Prepare: a damaging row without a gene code, next to nothing else
    _, genes = disease_genes
    settings = GenotypeSettings()
    counts = Counter()
    rows = _variant(hpo, None, cadd=38.0, revel=0.99)

    # Execute
    out = genotype_log_ratios([rows], COLUMNS, genes, settings, counts)

    # Assert: no disease gains; diseases with genes get the miss
    assert counts["rows_gene_outside_vocabulary"] == 1
    assert out[0, 0] == pytest.approx(math.log(settings.miss))
    assert out[0, 1] == pytest.approx(math.log(settings.miss))
    assert out[0, 2] == 0.0


def test_row_without_scores_falls_back_to_impact_and_is_counted(disease_genes, hpo):
    # Prepare: a HIGH-impact FBN1 row with neither CADD nor REVEL, and a scored row
    _, genes = disease_genes
    settings = GenotypeSettings()
    counts = Counter()
    unscored = _variant(hpo, "FBN1", impact=HIGH)
    scored = _variant(hpo, "CFTR", cadd=20.0, revel=0.5, impact=HIGH)

    # Execute
    out = genotype_log_ratios([np.vstack([unscored, scored])], COLUMNS, genes, settings, counts)

    # Assert: only the unscored row is counted; its s is the HIGH fallback 0.9
    assert counts["rows_scored_by_impact_only"] == 1
    assert out[0, 0] == pytest.approx(math.log(settings.miss + settings.hit_ratio * 0.9), rel=1e-5)
    assert out[0, 1] == pytest.approx(math.log(settings.miss + settings.hit_ratio * 0.5), rel=1e-5)


def test_one_missing_score_uses_the_other(hpo):
    # Prepare: REVEL missing, CADD present
    settings = GenotypeSettings()
    rows = _variant(hpo, "FBN1", cadd=20.0, revel=None, impact=HIGH)
    counts = Counter()

    # Execute
    s = row_pathogenicity(rows, COLUMNS, settings, counts)

    # Assert
    assert s[0] == pytest.approx(0.5)
    assert counts["rows_scored_by_impact_only"] == 0


def test_best_variant_per_gene_is_used(disease_genes, hpo):
    # Prepare: a weak and a strong FBN1 variant
    _, genes = disease_genes
    settings = GenotypeSettings()
    rows = np.vstack([_variant(hpo, "FBN1", cadd=4.0, revel=0.1), _variant(hpo, "FBN1", cadd=36.0, revel=0.9)])

    # Execute
    out = genotype_log_ratios([rows], COLUMNS, genes, settings)

    # Assert
    assert out[0, 0] == pytest.approx(math.log(settings.miss + settings.hit_ratio * 0.9), rel=1e-5)


def test_patient_without_variants_gets_no_genotype_evidence(disease_genes):
    # Prepare
    _, genes = disease_genes
    counts = Counter()

    # Execute
    out = genotype_log_ratios([None, np.zeros((0, len(COLUMNS)), np.float32)], COLUMNS, genes, GenotypeSettings(), counts)

    # Assert
    assert not out.any()
    assert counts["patients_without_variants"] == 2


# ---------------------------------------------------------------- metrics


def test_ranks_count_ties_against_the_truth():
    # Prepare
    scores = np.array([[0.9, 0.1, 0.5], [0.5, 0.5, 0.5], [0.1, 0.2, 0.3]])
    truth = np.array([0, 1, 0])

    # Execute
    out = ranks(scores, truth)

    # Assert: first, last of a three-way tie, last
    assert out.tolist() == [0, 2, 2]


def test_patient_hits_from_ranks():
    # Prepare
    closed, open_ = np.array([0, 4, 9]), np.array([0, 10, 2])

    # Execute
    hits = patient_hits(closed, open_)

    # Assert
    assert hits["top1"].tolist() == [1, 0, 0]
    assert hits["top5"].tolist() == [1, 1, 0]
    assert hits["top10"].tolist() == [1, 1, 1]
    assert hits["open_top10"].tolist() == [1, 0, 1]
    assert hits["mrr"] == pytest.approx([1.0, 0.2, 0.1])


def test_paired_bootstrap_of_identical_arrays_is_zero():
    # Prepare
    a = np.random.default_rng(1).random(40)

    # Execute / Assert
    assert paired_bootstrap(a, a.copy(), resamples=200) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_of_a_strictly_better_array_lies_above_zero():
    # Prepare
    rng = np.random.default_rng(2)
    b = rng.random(50)
    a = b + 0.1 + 0.05 * rng.random(50)

    # Execute
    mean, low, high = paired_bootstrap(a, b, resamples=500)

    # Assert
    assert 0 < low <= mean <= high
    assert mean == pytest.approx(float((a - b).mean()))


def test_paired_bootstrap_of_no_patients_is_nan():
    # Execute / Assert
    assert all(math.isnan(v) for v in paired_bootstrap(np.empty(0), np.empty(0)))


def test_one_allele_counts_less_for_a_recessive_only_disease(disease_genes, hpo):
    # Prepare: cystic fibrosis is autosomal recessive only, Marfan dominant; one heterozygous CFTR row, then two
    ids, genes = disease_genes
    recessive = recessive_only(ids)
    settings = GenotypeSettings(single_allele_recessive=0.1)
    one = _variant(hpo, "CFTR", cadd=35.0, revel=0.95)
    two = np.vstack([one, _variant(hpo, "CFTR", cadd=30.0, revel=0.9)])
    fbn1 = _variant(hpo, "FBN1", cadd=35.0, revel=0.95)

    # Execute
    out = genotype_log_ratios([one, two, fbn1], COLUMNS, genes, settings, recessive=recessive)
    ignored = genotype_log_ratios([one], COLUMNS, genes, GenotypeSettings(), recessive=recessive)

    # Assert: one allele in a recessive disease's gene is weak evidence, two alleles full; a dominant gene is untouched
    s = (35.0 / 40.0 + 0.95) / 2
    assert recessive.tolist() == [False, True, False]
    assert out[0, 1] == pytest.approx(math.log(settings.miss + settings.hit_ratio * 0.1 * s), rel=1e-5)
    assert out[1, 1] == pytest.approx(math.log(settings.miss + settings.hit_ratio * s), rel=1e-5)
    assert out[2, 0] == pytest.approx(math.log(settings.miss + settings.hit_ratio * s), rel=1e-5)
    assert ignored[0, 1] == pytest.approx(out[1, 1], rel=1e-5)  # single_allele_recessive=1 ignores inheritance
