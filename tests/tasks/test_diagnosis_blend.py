"""A site's blend of the federated scorer with the training-free rankers (federation/tasks/diagnosis/blend.py)."""
from __future__ import annotations

import numpy as np
import pytest

from federation.tasks.diagnosis import blend
from federation.tasks.diagnosis.deployment import BLEND, choose_sites


def top1(scores: np.ndarray, labels: np.ndarray) -> float:
    return float((scores.argmax(1) == labels).mean())


def _patients(n: int, federated_right: float, ranker_right: float, seed: int, candidates: int = 30):
    """Scores where the federated scorer ranks the truth first for a fraction of patients, the likelihood ranker for
    another (a weaker runner-up signal everywhere), Resnik is noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, candidates, n)
    federated, likelihood, resnik = (rng.normal(size=(n, candidates)) for _ in range(3))
    rows = np.arange(n)
    federated[rows, labels] += np.where(rng.random(n) < federated_right, 4.0, 1.5)
    likelihood[rows, labels] += np.where(rng.random(n) < ranker_right, 6.0, 0.0)
    return (federated, likelihood, resnik), labels


def test_z_scores_put_every_patients_scores_on_one_scale_and_leave_a_flat_row_at_zero():
    z = blend.z_scores(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [-100.0, 0.0, 100.0]]))
    assert np.allclose(z[0], z[2]) and np.allclose(z[1], 0.0)
    assert np.allclose(z.mean(1), 0.0)


def test_the_blend_weighs_the_ranker_that_knows_the_site_above_the_one_that_does_not():
    scores, labels = _patients(300, federated_right=0.3, ranker_right=0.8, seed=0)
    fitted = blend.fit(scores, labels, top1)
    assert fitted.weights[0] > fitted.weights[1]  # the likelihood ranker carries the signal, Resnik only noise
    assert top1(fitted(*scores), labels) > top1(scores[0], labels) + 0.2


def test_where_the_federated_scorer_is_already_best_the_blend_leaves_it_alone():
    scores, labels = _patients(300, federated_right=1.0, ranker_right=0.0, seed=1)
    assert blend.fit(scores, labels, top1).weights == (0.0, 0.0)


def test_cross_fitted_validation_figures_are_no_better_than_fitting_on_the_same_patients():
    """On patients where no ranker helps, weights picked on the judged patients flatter the blend; out of fold they
    cannot, so the cross-fitted figure is never above the in-sample one."""
    for seed in range(5):
        scores, labels = _patients(40, federated_right=0.5, ranker_right=0.5, seed=seed)
        in_sample = top1(blend.fit(scores, labels, top1)(*scores), labels)
        assert top1(blend.cross_fitted(scores, labels, top1, seed=seed), labels) <= in_sample


def _hits(values) -> dict[str, np.ndarray]:
    v = np.asarray(values, float)
    return {"top1": v, "open_top1": v, "open_top10": v}


def test_a_site_deploys_the_blend_only_when_its_validation_favours_it_and_ties_keep_the_federated_scorer():
    val_hits = {
        "federated": {"a": _hits([1] * 6 + [0] * 6), "b": _hits([1] * 10 + [0] * 2)},
        "local": {"a": _hits([1] * 5 + [0] * 7), "b": _hits([1] * 8 + [0] * 4)},
        BLEND: {"a": _hits([1] * 9 + [0] * 3), "b": _hits([1] * 10 + [0] * 2)},
    }
    choices = choose_sites(val_hits, min_val=10)
    assert choices["a"].deployed == BLEND and choices["a"].validation[BLEND] == pytest.approx(3 * 0.75)
    assert choices["b"].deployed == "federated"
