"""Case profiles the sites share (federation/tasks/diagnosis/case_profiles.py) and the FedAvg-trained
diagnosis scorer (federation/tasks/diagnosis/scorer.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

from federation.tasks.diagnosis.case_profiles import (
    CaseCounts,
    blended_frequencies,
    case_closures,
    count_cases,
    gene_indicator,
    leave_one_out,
    secure_total,
    share,
    site_view,
)
from federation.tasks.diagnosis.cohort import Patients
from federation.tasks.diagnosis.evidence import Features, standardised_similarity
from federation.tasks.diagnosis.scorer import (
    DiagnosisScorer,
    EvidenceTensors,
    TrainSettings,
    closed_loss,
    score,
    train_alone,
    train_federated,
    train_local,
)
from models.knowledge import MISSING_SCORE

SEIZURE, TONIC_CLONIC, ARACHNODACTYLY, SCOLIOSIS = "HP:0001250", "HP:0002069", "HP:0001166", "HP:0002650"


def _signed(hpo, observed=(), excluded=()) -> np.ndarray:
    return np.array([hpo.position[t] + 1 for t in observed] + [-(hpo.position[t] + 1) for t in excluded], dtype=np.int64)


def _patients(hpo, cases) -> Patients:
    """cases: (label, observed, excluded, genes) tuples."""
    return Patients(
        ids=[f"p{i}" for i in range(len(cases))],
        terms=[_signed(hpo, o, e) for _, o, e, _ in cases],
        labels=np.array([c[0] for c in cases], dtype=np.int64),
        variants=[None] * len(cases),
        genes=[tuple(c[3]) for c in cases],
    )


def _counts(hpo, cases, terms: dict | None = None, genes: dict | None = None) -> CaseCounts:
    """Hand-made counts: cases [L]; terms / genes {(label, column): count}."""
    cases = np.asarray(cases, dtype=np.int64)

    def matrix(cells, width):
        cells = cells or {}
        rows = [r for r, _ in cells]
        cols = [c for _, c in cells]
        return sparse.csr_matrix((np.array(list(cells.values()), np.float32), (rows, cols)), shape=(len(cases), width))

    return CaseCounts(cases, matrix(terms, hpo.size), matrix(genes, len(hpo.gene_symbols)))


def _same(a: CaseCounts, b: CaseCounts) -> bool:
    return (
        np.array_equal(a.cases, b.cases)
        and np.array_equal(a.terms.toarray(), b.terms.toarray())
        and np.array_equal(a.genes.toarray(), b.genes.toarray())
    )


@pytest.fixture
def site(hpo):
    """Three training cases of label 0 / 1, with one excluded term and one unknown gene."""
    return _patients(
        hpo,
        [
            (0, (TONIC_CLONIC,), (SCOLIOSIS,), ("FBN1",)),
            (0, (SEIZURE, ARACHNODACTYLY), (), ("FBN1", "NOT_A_GENE_XYZ")),
            (1, (ARACHNODACTYLY,), (), ("CFTR", "CFTR")),
        ],
    )


# ---------------------------------------------------------------- counting


def test_count_cases_counts_cases_closures_and_genes(site, hpo):
    # Prepare
    seizure, tonic_clonic = hpo.position[SEIZURE], hpo.position[TONIC_CLONIC]
    arachnodactyly, scoliosis = hpo.position[ARACHNODACTYLY], hpo.position[SCOLIOSIS]
    fbn1, cftr = hpo.gene_symbols.index("FBN1"), hpo.gene_symbols.index("CFTR")

    # Execute
    counts = count_cases(site, n_labels=3, hpo=hpo)
    terms, genes = counts.terms.toarray(), counts.genes.toarray()

    # Assert: cases per label (an unseen label has 0)
    assert counts.cases.tolist() == [2, 1, 0]
    # a term counts the cases showing it or a more specific one; ancestors come with it
    assert terms[0, seizure] == 2
    assert terms[0, tonic_clonic] == 1
    assert terms[0, arachnodactyly] == 1
    for ancestor in hpo.ancestors(seizure):
        assert terms[0, ancestor] >= 2
    assert terms[0, hpo.position["HP:0000001"]] == 2  # each case once, however many terms it has
    # an excluded term is not counted
    assert terms[0, scoliosis] == 0
    assert terms[1, arachnodactyly] == 1 and terms[1, seizure] == 0
    assert not terms[2].any()
    # genes: once per case, the unknown one nowhere
    assert genes[0, fbn1] == 2 and genes[1, cftr] == 1
    assert genes.sum() == 3


def test_gene_indicator_reports_genes_outside_the_vocabulary(hpo):
    # Prepare
    named = [("FBN1", "NOT_A_GENE_XYZ"), (), ("ALSO_NOT_A_GENE", "CFTR", "CFTR")]

    # Execute
    matrix, unknown = gene_indicator(named, hpo)

    # Assert
    assert unknown == 2
    assert matrix.shape == (3, len(hpo.gene_symbols))
    assert matrix[0, hpo.gene_symbols.index("FBN1")] == 1
    assert matrix[2, hpo.gene_symbols.index("CFTR")] == 1
    assert matrix.sum() == 2 and matrix[1].nnz == 0


def test_case_closures_ignores_excluded_terms(hpo):
    # Prepare
    terms = [_signed(hpo, (TONIC_CLONIC,), (ARACHNODACTYLY,)), np.empty(0, np.int64)]

    # Execute
    closures = case_closures(terms, hpo)

    # Assert
    assert set(closures[0].indices) == set(hpo.ancestors(hpo.position[TONIC_CLONIC]))
    assert closures[1].nnz == 0
    assert set(closures.data.tolist()) == {1.0}


# ---------------------------------------------------------------- suppression and sharing


def test_suppressed_zeroes_small_cells_and_small_diseases(hpo):
    # Prepare: label 0 has 3 cases (a term at 1 and one at 3, a gene at 1); label 1 has 1 case
    counts = _counts(hpo, [3, 1], terms={(0, 5): 1, (0, 6): 3, (1, 5): 1}, genes={(0, 7): 1, (0, 8): 2, (1, 7): 1})

    # Execute
    out = counts.suppressed(2)

    # Assert
    assert out.cases.tolist() == [3, 0]
    terms, genes = out.terms.toarray(), out.genes.toarray()
    assert terms[0, 5] == 0 and terms[0, 6] == 3
    assert genes[0, 7] == 0 and genes[0, 8] == 2
    assert not terms[1].any() and not genes[1].any()
    # the original is untouched
    assert counts.terms[0, 5] == 1 and counts.cases.tolist() == [3, 1]


def test_case_counts_add_elementwise(hpo):
    # Prepare
    a = _counts(hpo, [1, 2], terms={(0, 3): 1}, genes={(1, 4): 2})
    b = _counts(hpo, [2, 0], terms={(0, 3): 2, (1, 9): 1}, genes={(1, 4): 1})

    # Execute
    total = a + b

    # Assert
    assert total.cases.tolist() == [3, 2]
    assert total.terms[0, 3] == 3 and total.terms[1, 9] == 1
    assert total.genes[1, 4] == 3
    assert isinstance(total.terms, sparse.csr_matrix)


def _three_sites(hpo) -> dict[str, CaseCounts]:
    a = _patients(hpo, [(0, (TONIC_CLONIC,), (), ("FBN1",)), (0, (SEIZURE,), (), ()), (1, (ARACHNODACTYLY,), (), ("CFTR",))])
    b = _patients(hpo, [(0, (SEIZURE, SCOLIOSIS), (), ("FBN1",)), (2, (SCOLIOSIS,), (), ("CFTR",))])
    c = _patients(hpo, [(1, (ARACHNODACTYLY, SCOLIOSIS), (), ("CFTR",)), (2, (TONIC_CLONIC,), (), ())])
    return {name: count_cases(p, 3, hpo) for name, p in (("a", a), ("b", b), ("c", c))}


def test_secure_total_equals_plain_sum(hpo):
    # Prepare
    per_site = _three_sites(hpo)
    plain = per_site["a"] + per_site["b"] + per_site["c"]

    # Execute
    total = secure_total(per_site)

    # Assert: exact integers, same shapes
    assert _same(total, plain)
    assert total.terms.shape == plain.terms.shape and total.genes.shape == plain.genes.shape


def test_share_secure_suppresses_the_total(hpo):
    # Prepare
    per_site = _three_sites(hpo)
    plain = per_site["a"] + per_site["b"] + per_site["c"]

    # Execute
    shared = share(per_site, min_count=2, secure=True)

    # Assert
    assert _same(shared, plain.suppressed(2))
    assert shared.cases.tolist() == [3, 2, 2]


def test_share_plain_suppresses_per_site_while_secure_total_survives(hpo):
    # Prepare: one case of label 0 at each of two sites
    one = _patients(hpo, [(0, (SEIZURE,), (), ("FBN1",))])
    per_site = {"a": count_cases(one, 2, hpo), "b": count_cases(one, 2, hpo)}
    seizure, fbn1 = hpo.position[SEIZURE], hpo.gene_symbols.index("FBN1")

    # Execute
    plain = share(per_site, min_count=2, secure=False)
    secure = share(per_site, min_count=2, secure=True)

    # Assert: each site's 1 is below k; the consortium's 2 is not
    assert plain.cases.tolist() == [0, 0]
    assert plain.terms.nnz == 0 and plain.genes.nnz == 0
    assert secure.cases.tolist() == [2, 0]
    assert secure.terms[0, seizure] == 2 and secure.genes[0, fbn1] == 2


def test_share_plain_is_the_sum_of_suppressed_sites(hpo):
    # Prepare
    per_site = _three_sites(hpo)

    # Execute
    shared = share(per_site, min_count=2)

    # Assert
    expected = per_site["a"].suppressed(2) + per_site["b"].suppressed(2) + per_site["c"].suppressed(2)
    assert _same(shared, expected)
    assert shared.cases.tolist() == [2, 0, 0]


# ---------------------------------------------------------------- blending and leave-one-out


def test_blended_frequencies(hpo):
    # Prepare: label 0 annotated (F = 0.5 at term 10), label 1 not, label 2 neither annotated nor seen
    annotation_rows = sparse.csr_matrix((np.array([0.5], np.float32), ([0], [10])), shape=(3, hpo.size))
    counts = _counts(hpo, [4, 3, 0], terms={(0, 10): 4, (1, 10): 2})
    prior_cases, unannotated_prior = 5.0, 1.0

    # Execute
    F = blended_frequencies(annotation_rows, counts, prior_cases, unannotated_prior).toarray()

    # Assert
    assert F[1, 10] == pytest.approx(2 / (3 + unannotated_prior))
    assert F[0, 10] == pytest.approx((4 + prior_cases * 0.5) / (4 + prior_cases))
    assert 0.5 < F[0, 10] < 1.0  # between the annotation and the cases' frequency
    assert np.isfinite(F).all() and not F[2].any()


def test_blended_frequencies_without_cases_is_the_annotation(hpo):
    # Prepare
    annotation_rows = sparse.csr_matrix((np.array([0.3, 0.9], np.float32), ([0, 0], [4, 8])), shape=(1, hpo.size))
    counts = _counts(hpo, [0])

    # Execute
    F = blended_frequencies(annotation_rows, counts, prior_cases=5.0)

    # Assert
    assert np.allclose(F.toarray(), annotation_rows.toarray())


def test_leave_one_out_removes_exactly_one_patient(site, hpo):
    # Prepare
    counts = count_cases(site, 3, hpo)
    closures = case_closures(site.terms, hpo)
    genes, _ = gene_indicator(site.genes, hpo)
    for i in range(len(site)):
        rest = Patients(
            [site.ids[j] for j in range(len(site)) if j != i],
            [site.terms[j] for j in range(len(site)) if j != i],
            np.delete(site.labels, i),
            [None] * (len(site) - 1),
            [site.genes[j] for j in range(len(site)) if j != i],
        )

        # Execute
        out = leave_one_out(counts, int(site.labels[i]), closures[i], genes[i])

        # Assert: the same as never having counted that patient
        assert _same(out, count_cases(rest, 3, hpo)), f"patient {i}"
    assert counts.cases.tolist() == [2, 1, 0]  # the input is not modified


# ---------------------------------------------------------------- scorer

Q, C = 5, 4


def _synthetic_site(n: int, seed: int) -> tuple[EvidenceTensors, Features]:
    """Table rows 0..3 point at disease 0..3 (+1); row 4 is a misleading term (+3 for disease 0) every patient
    reports; the genotype is a weak, informative hint; excluded rows 1..3 speak against disease 1..3."""
    rng = np.random.default_rng(seed)
    observed = np.zeros((Q, C), np.float32)
    observed[np.arange(4), np.arange(4)] = 1.0
    observed[4, 0] = 3.0
    excluded = np.zeros((Q, C), np.float32)
    excluded[np.arange(1, 4), np.arange(1, 4)] = -0.5
    labels = np.array([1, 2])  # the label columns an approach's counts rewrite; here the same values
    tables = EvidenceTensors(
        torch.from_numpy(observed), torch.from_numpy(excluded), torch.from_numpy(observed[:, labels].copy()),
        torch.from_numpy(excluded[:, labels].copy()), torch.from_numpy(labels), torch.zeros(C), torch.arange(Q),
    )
    truth = rng.integers(1, C, size=n)
    observed_rows = np.stack([truth, np.full(n, 4)], 1).astype(np.int64)
    excluded_rows = np.full((n, 1), -1, np.int64)
    excluded_rows[::2, 0] = np.where(truth[::2] == 1, 2, 1)  # half rule out a wrong disease
    genotype = np.zeros((n, C), np.float32)
    genotype[np.arange(n), truth] = 0.5
    similarity = rng.normal(0, 1, (n, C)).astype(np.float32)
    similarity[np.arange(n), truth] += 1.0  # like Resnik: informative, noisy
    return tables, Features(observed_rows, excluded_rows, genotype, truth.astype(np.int64), similarity)


def _cross_entropy(model: DiagnosisScorer, tables: EvidenceTensors, features: Features) -> float:
    logits = score(model, tables, features)
    return float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(features.truth)))


def test_untrained_scorer_is_the_likelihood_ratio_sum():
    # Prepare
    tables, features = _synthetic_site(6, seed=0)
    model = DiagnosisScorer(Q)

    # Execute
    logits = score(model, tables, features, chunk=4).numpy()

    # Assert: sum of observed rows + excluded rows (padding ignored) + genotype
    for i in range(len(features.truth)):
        expected = tables.observed.numpy()[features.observed_rows[i]].sum(0) + features.genotype[i]
        for r in features.excluded_rows[i]:
            if r >= 0:
                expected = expected + tables.excluded.numpy()[r]
        assert np.allclose(logits[i], expected)


def test_leave_one_out_values_rewrite_the_own_column():
    # Prepare
    tables, features = _synthetic_site(4, seed=3)
    model = DiagnosisScorer(Q)
    inputs = [torch.from_numpy(a) for a in (features.observed_rows, features.excluded_rows, features.genotype, features.similarity)]
    truth = torch.from_numpy(features.truth)
    true = (torch.full((4, 2), -1.0), torch.zeros(4, 1), torch.zeros(4), torch.zeros(4))

    # Execute
    plain = model.logits(tables, *inputs)
    rewritten = model.logits(tables, *inputs, true=true, truth=truth)

    # Assert: only the diagnosis column changes, to the leave-one-out sum
    own = rewritten[torch.arange(4), truth]
    assert torch.allclose(own, torch.full((4,), -2.0))
    mask = torch.ones_like(plain, dtype=torch.bool)
    mask[torch.arange(4), truth] = False
    assert torch.equal(plain[mask], rewritten[mask])


def test_train_federated_lowers_training_cross_entropy():
    # Prepare: two sites of synthetic evidence
    sites = {"north": _synthetic_site(24, seed=1), "south": _synthetic_site(16, seed=2)}
    before = {k: (v[1].observed_rows.copy(), v[1].genotype.copy()) for k, v in sites.items()}
    settings = TrainSettings(rounds=5, local_epochs=1, lr=0.05, batch_size=8, l2=1e-3)
    untrained = DiagnosisScorer(Q)

    # Execute
    model = train_federated(sites, settings, n_terms=Q, seed=0)

    # Assert: lower loss at every site, and the misleading term is trusted less than the informative ones
    for tables, features in sites.values():
        assert _cross_entropy(model, tables, features) < _cross_entropy(untrained, tables, features)
    weights = model.term_log_weight.detach()
    assert weights[4] < 0
    assert weights[4] < weights[:4].min()
    assert float(model.genotype_weight.detach()) > 1.0
    for name, (rows, genotype) in before.items():  # the sites' data is left as it was
        assert np.array_equal(sites[name][1].observed_rows, rows) and np.array_equal(sites[name][1].genotype, genotype)


def test_train_federated_averages_local_weight_changes_by_cases():
    # Prepare: one round over two sites and an empty one, replayed by hand from the weights only
    sites = {"a": _synthetic_site(10, seed=4), "b": _synthetic_site(20, seed=5)}
    empty_tables, empty = _synthetic_site(0, seed=6)
    sites["c"] = (empty_tables, empty)
    settings = TrainSettings(rounds=1, local_epochs=2, lr=0.05, batch_size=8, l2=1e-3)
    seed = 3
    start = DiagnosisScorer(Q).state_dict()
    deltas = {}
    for i, name in enumerate(sorted(sites)):
        if not len(sites[name][1].truth):
            continue
        local = DiagnosisScorer(Q)
        local.load_state_dict(start)
        train_local(local, *sites[name], settings.local_epochs, settings, seed=seed * 1000 + i)
        deltas[name] = {k: v - start[k] for k, v in local.state_dict().items()}

    # Execute
    model = train_federated(sites, settings, n_terms=Q, seed=seed)

    # Assert: start + case-weighted mean of the two sites' changes; the empty site does not dilute it
    for key, value in model.state_dict().items():
        expected = start[key] + (10 * deltas["a"][key] + 20 * deltas["b"][key]) / 30
        assert torch.allclose(value, expected, atol=1e-6), key
    assert not torch.equal(model.term_log_weight, torch.zeros(Q))


def test_train_alone_lowers_cross_entropy_and_leaves_empty_untrained():
    # Prepare
    tables, features = _synthetic_site(30, seed=7)
    empty_tables, empty = _synthetic_site(0, seed=8)
    settings = TrainSettings(rounds=4, local_epochs=1, lr=0.05, batch_size=8)

    # Execute
    model = train_alone(tables, features, settings, n_terms=Q, seed=0)
    untouched = train_alone(empty_tables, empty, settings, n_terms=Q, seed=0)

    # Assert
    assert _cross_entropy(model, tables, features) < _cross_entropy(DiagnosisScorer(Q), tables, features)
    for key, value in untouched.state_dict().items():
        assert torch.equal(value, DiagnosisScorer(Q).state_dict()[key])


def test_label_columns_come_from_the_approachs_counts_and_the_public_table_is_untouched():
    # Prepare: public log LRs of 0 everywhere; the approach's counts give label column 2 a +2 for row 0
    public = torch.zeros(2, 3)
    label_observed = torch.tensor([[2.0], [0.0]])
    tables = EvidenceTensors(public, public.clone(), label_observed, torch.zeros(2, 1), torch.tensor([2]), torch.zeros(3), torch.arange(2))
    features = Features(np.array([[0]]), np.array([[-1]]), np.zeros((1, 3), np.float32), np.array([2]), np.ones((1, 3), np.float32))

    # Execute
    logits = score(DiagnosisScorer(2), tables, features)

    # Assert
    assert logits.tolist() == [[0.0, 0.0, 2.0]]
    assert public.abs().sum() == 0


def test_a_site_ranks_with_the_shared_counts_and_its_own_in_full(hpo):
    # Prepare: two sites with one case each of label 0 (suppressed when shared in the clear at k=2)
    term = hpo.position[SEIZURE] + 1
    own = count_cases(_patients(hpo, [(0, (SEIZURE,), (), ("FBN1",))]), 2, hpo)
    other = count_cases(_patients(hpo, [(0, (SEIZURE,), (), ("FBN1",))]), 2, hpo)

    # Execute
    clear = site_view(own, share({"a": own, "b": other}, 2), 2)
    secure = site_view(own, share({"a": own, "b": other}, 2, secure=True), 2, secure=True)

    # Assert: in the clear the site still has its own case; securely the total of 2 survived, and is kept
    assert clear.cases.tolist() == [1, 0]
    assert clear.terms[0, term - 1] == 1
    assert secure.cases.tolist() == [2, 0]
    assert secure.terms[0, term - 1] == 2


def test_tempering_scales_each_patients_phenotype_sum_by_its_term_count():
    # Prepare: one patient with 2 observed terms; b = 1 halves the phenotype part, nothing else
    tables, features = _synthetic_site(4, seed=3)
    plain, tempered = DiagnosisScorer(Q), DiagnosisScorer(Q)
    with torch.no_grad():
        tempered.term_count_exponent.fill_(1.0)

    # Execute
    a, b = score(plain, tables, features).numpy(), score(tempered, tables, features).numpy()

    # Assert: every patient reports 2 terms, so the observed part is halved; excluded and genotype are not
    for i in range(len(features.truth)):
        phenotype = tables.observed.numpy()[features.observed_rows[i]].sum(0)
        assert np.allclose(a[i] - b[i], phenotype / 2)


def test_tempering_is_learned_only_when_configured():
    sites = {"north": _synthetic_site(24, seed=1), "south": _synthetic_site(16, seed=2)}
    off = train_federated(sites, TrainSettings(rounds=3, lr=0.05, batch_size=8, temper_terms=False), n_terms=Q, seed=0)
    on = train_federated(sites, TrainSettings(rounds=3, lr=0.05, batch_size=8, temper_terms=True), n_terms=Q, seed=0)
    assert float(off.term_count_exponent) == 0.0
    assert float(on.term_count_exponent) != 0.0


@pytest.mark.parametrize("added, missing", [
    ("term_count_exponent", ("term_count_exponent",)),  # saved before tempering: loads as untempered
    ("similarity_weight", ("similarity_weight", "term_count_exponent")),  # saved before both: loads without similarity
])
def test_a_scorer_saved_before_a_learned_weight_existed_loads_with_it_at_zero(added, missing):
    saved = {k: v for k, v in DiagnosisScorer(Q).state_dict().items() if k not in missing}
    model = DiagnosisScorer(Q)
    with torch.no_grad():
        getattr(model, added).fill_(0.7)
    model.load_compatible(saved)
    assert float(getattr(model, added)) == 0.0


def test_similarity_adds_its_weighted_score_to_every_column_the_own_one_included():
    # Prepare: w_sim = 2; the own column rewritten from leave-one-out values keeps the similarity term
    tables, features = _synthetic_site(4, seed=3)
    plain, weighted = DiagnosisScorer(Q), DiagnosisScorer(Q)
    with torch.no_grad():
        weighted.similarity_weight.fill_(2.0)
    inputs = [torch.from_numpy(a) for a in (features.observed_rows, features.excluded_rows, features.genotype, features.similarity)]
    truth = torch.from_numpy(features.truth)
    true = (torch.zeros(4, 2), torch.zeros(4, 1), torch.zeros(4), torch.zeros(4))

    # Execute
    difference = (weighted.logits(tables, *inputs) - plain.logits(tables, *inputs)).detach().numpy()
    own = weighted.logits(tables, *inputs, true=true, truth=truth)[torch.arange(4), truth].detach().numpy()

    # Assert
    assert np.allclose(difference, 2.0 * features.similarity)
    assert np.allclose(own, 2.0 * features.similarity[np.arange(4), features.truth])


def test_similarity_weight_is_learned_only_when_configured_and_grows_when_informative():
    sites = {"north": _synthetic_site(24, seed=1), "south": _synthetic_site(16, seed=2)}
    off = train_federated(sites, TrainSettings(rounds=3, lr=0.05, batch_size=8, resnik_similarity=False), n_terms=Q, seed=0)
    on = train_federated(sites, TrainSettings(rounds=3, lr=0.05, batch_size=8, resnik_similarity=True), n_terms=Q, seed=0)
    assert float(off.similarity_weight) == 0.0
    assert float(on.similarity_weight) > 0.0


def test_similarity_is_standardised_over_annotated_diseases_and_zero_for_the_rest():
    row = np.array([1.0, 3.0, MISSING_SCORE, 5.0], np.float32)
    known = np.array([True, True, False, True])
    out = standardised_similarity(row, known)
    assert out[2] == 0.0
    assert np.isclose(out[known].mean(), 0.0, atol=1e-6) and np.isclose(out[known].std(), 1.0)
    assert out[3] > out[1] > out[0]
    assert not standardised_similarity(np.full(4, 2.0, np.float32), known).any()  # a report without signal: no evidence


# ---------------------------------------------------------------- deployed choice

def _val_hits(top1: list[float]) -> dict[str, np.ndarray]:
    values = np.array(top1, dtype=float)
    return {"top1": values, "open_top1": values, "open_top10": values}


def test_each_site_deploys_the_scorer_its_validation_patients_favour_and_ties_keep_the_federated_one():
    from federation.tasks.diagnosis.deployment import choose_sites

    val_hits = {
        "federated": {"a": _val_hits([1] * 6 + [0] * 6), "b": _val_hits([1] * 10 + [0] * 2), "c": _val_hits([1] * 3)},
        "local": {"a": _val_hits([1] * 9 + [0] * 3), "b": _val_hits([1] * 10 + [0] * 2), "c": _val_hits([0] * 3)},
    }
    choices = choose_sites(val_hits, min_val=10)
    assert (choices["a"].deployed, choices["a"].reason) == ("local", "best on validation")
    assert (choices["b"].deployed, choices["b"].reason) == ("federated", "best on validation")  # a tie
    # c has 3 validation patients: it takes what a and b's pooled validation favours (local: 19 vs 16 right)
    assert choices["c"].deployed == "local" and choices["c"].reason.startswith("validation too small (3 < 10 patients): the candidate best on the pooled")
    alone = choose_sites({k: {"c": v["c"]} for k, v in val_hits.items()}, min_val=10)
    assert alone["c"].deployed == "federated" and alone["c"].validation == {}


def test_closed_loss_ranks_among_the_label_diseases_only():
    # Prepare: 5 candidates, labels are columns 3 and 1; column 0 (not a label) has the highest logit
    logits = torch.tensor([[9.0, 1.0, 0.0, 2.0, 0.0], [9.0, 0.5, 0.0, 0.0, 0.0]])
    truth = torch.tensor([3, 1])  # candidate columns: label positions 0 and 1
    columns = torch.tensor([3, 1])

    # Execute
    loss = closed_loss(logits, truth, columns)

    # Assert: a two-way softmax over columns [3, 1] alone; the open loss would be far larger
    expected = -(torch.log_softmax(torch.tensor([2.0, 1.0]), 0)[0] + torch.log_softmax(torch.tensor([0.0, 0.5]), 0)[1]) / 2
    assert torch.isclose(loss, expected)
    assert torch.nn.functional.cross_entropy(logits, truth) > loss + 5


def _labelled_only(site: tuple[EvidenceTensors, Features]) -> tuple[EvidenceTensors, Features]:
    """The patients whose diagnosis is a label column (in a cohort, every one is)."""
    tables, features = site
    keep = np.isin(features.truth, tables.label_columns.numpy())
    return tables, Features(*(getattr(features, f)[keep] for f in ("observed_rows", "excluded_rows", "genotype", "truth", "similarity")))


def test_closed_loss_refuses_a_diagnosis_outside_the_labels():
    with pytest.raises(ValueError, match="not among the label columns"):
        closed_loss(torch.zeros(1, 5), torch.tensor([2]), torch.tensor([3, 1]))


def test_closed_weight_changes_training_only_when_set():
    sites = {"north": _labelled_only(_synthetic_site(24, seed=1)), "south": _labelled_only(_synthetic_site(16, seed=2))}
    plain = train_federated(sites, TrainSettings(rounds=2, lr=0.05, batch_size=8), n_terms=Q, seed=0)
    zero = train_federated(sites, TrainSettings(rounds=2, lr=0.05, batch_size=8, closed_weight=0.0), n_terms=Q, seed=0)
    closed = train_federated(sites, TrainSettings(rounds=2, lr=0.05, batch_size=8, closed_weight=1.0), n_terms=Q, seed=0)
    assert torch.equal(plain.term_log_weight, zero.term_log_weight)
    assert not torch.allclose(plain.term_log_weight, closed.term_log_weight)
