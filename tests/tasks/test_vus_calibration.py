"""Calibration on held-out variants (Platt, isotonic, bootstrap interval, prior shift) and Pejaver-style evidence levels."""
import numpy as np
import pytest

from federation.tasks.vus.calibration import (
    Calibrator,
    VariantCalibration,
    odds,
    posterior_from_lr,
)
from federation.tasks.vus.evidence import evidence_levels, posterior_threshold, thresholds


def simulated(n: int = 4000, a: float = 2.0, b: float = 0.5, seed: int = 0):
    """Logits whose true P(pathogenic) is sigmoid(a z + b)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(a * z + b)))).astype(int)
    return z, y


def test_platt_recovers_the_true_logistic_map():
    z, y = simulated()

    fitted = Calibrator.fit(z, y, "platt")

    assert fitted.params["a"][0] == pytest.approx(2.0, rel=0.15)
    assert fitted.params["b"][0] == pytest.approx(0.5, abs=0.2)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibrated_probabilities_are_monotone_in_the_logit_and_match_observed_rates(method):
    z, y = simulated(seed=1)
    grid = np.linspace(-6, 6, 50)

    fitted = Calibrator.fit(z, y, method)
    p = fitted.probability(grid)

    assert (np.diff(p) >= -1e-12).all()
    test_z, test_y = simulated(seed=2)
    high = fitted.probability(test_z) > 0.8
    assert test_y[high].mean() > 0.8 - 0.05


def test_the_likelihood_ratio_does_not_depend_on_the_calibration_rows_prior():
    z, y = simulated(seed=3)
    keep = (y == 1) | (np.random.default_rng(0).random(len(y)) < 0.3)  # the same model, fewer benign rows

    balanced, skewed = Calibrator.fit(z, y, "platt"), Calibrator.fit(z[keep], y[keep], "platt")

    assert skewed.data_prior > balanced.data_prior + 0.1
    ratio = skewed.likelihood_ratio(np.array([0.0, 1.0])) / balanced.likelihood_ratio(np.array([0.0, 1.0]))
    assert ratio == pytest.approx([1.0, 1.0], rel=0.25)


def test_the_posterior_at_the_calibration_prior_is_the_calibrated_probability():
    z, y = simulated(seed=4)
    fitted = Calibrator.fit(z, y, "platt")

    posterior = posterior_from_lr(fitted.likelihood_ratio(z[:20]), fitted.data_prior)

    assert posterior == pytest.approx(fitted.probability(z[:20]))


def test_a_lower_prior_gives_a_lower_posterior_and_the_interval_holds_the_point():
    z, y = simulated(n=600, seed=5)
    calibration = VariantCalibration.fit(z, y, "platt", n_bootstrap=50, seed=0)
    grid = np.linspace(-4, 4, 9)

    high_prior, _, _ = calibration.posterior(grid, prior=0.5)
    point, low, high = calibration.posterior(grid, prior=0.0441)

    assert (point < high_prior).all()
    assert (low <= point).all() and (point <= high).all() and (high - low > 0).any()


def test_calibration_round_trips_through_json(tmp_path):
    z, y = simulated(n=300, seed=6)
    calibration = VariantCalibration.fit(z, y, "isotonic", n_bootstrap=10, seed=0)
    path = tmp_path / "calibration.json"
    path.write_text(calibration.to_json())

    loaded = VariantCalibration.load(path)

    for before, after in zip(calibration.posterior(z[:30], 0.1), loaded.posterior(z[:30], 0.1)):
        assert after == pytest.approx(before)


def test_calibration_refuses_rows_of_one_class():
    with pytest.raises(ValueError, match="both classes"):
        VariantCalibration.fit(np.arange(20.0), np.ones(20, dtype=int))


def test_thresholds_follow_bayes_rule_and_reproduce_pejaver_supporting():
    cuts = thresholds(prior=0.0441, odds_very_strong=1124, levels=["supporting", "moderate", "strong"])

    # Pejaver et al. 2022: PP3 supporting at posterior 0.100, moderate 0.211 for prior 0.0441
    assert cuts["pathogenic_supporting"] == pytest.approx(0.100, abs=0.001)
    assert cuts["pathogenic_moderate"] == pytest.approx(0.211, abs=0.001)
    assert cuts["pathogenic_strong"] > cuts["pathogenic_moderate"] > cuts["pathogenic_supporting"] > 0.0441
    assert cuts["benign_strong"] < cuts["benign_moderate"] < cuts["benign_supporting"] < 0.0441
    exponents = {"supporting": 1 / 8, "moderate": 1 / 4, "strong": 1 / 2}
    for name, cut in cuts.items():  # posterior odds over prior odds is the level's OddsPath, c ** k (1 / c ** k for benign)
        side, level = name.split("_")
        sign = 1 if side == "pathogenic" else -1
        assert odds(cut) / odds(0.0441) == pytest.approx(1124 ** (sign * exponents[level]))
    assert posterior_threshold(1.0, 0.3) == pytest.approx(0.3)


def test_levels_are_the_strongest_met_by_the_whole_interval():
    cuts = thresholds(prior=0.0441, odds_very_strong=1124, levels=["supporting", "strong"])
    posterior = np.array([0.9, 0.9, 0.05, 0.001, 0.001])
    low = np.array([0.7, 0.2, 0.03, 0.0005, 0.0005])
    high = np.array([0.95, 0.95, 0.08, 0.002, 0.05])

    conservative = evidence_levels(posterior, low, high, cuts, conservative=True)
    point = evidence_levels(posterior, low, high, cuts, conservative=False)

    assert conservative == ["pathogenic_strong", "pathogenic_supporting", "uncertain", "benign_supporting", "uncertain"]
    assert point == ["pathogenic_strong", "pathogenic_strong", "uncertain", "benign_strong", "benign_strong"]


def test_an_impossible_prior_or_unknown_level_is_refused():
    with pytest.raises(ValueError, match="prior"):
        thresholds(prior=0.0)
    with pytest.raises(ValueError, match="levels"):
        thresholds(prior=0.1, levels=["huge"])
