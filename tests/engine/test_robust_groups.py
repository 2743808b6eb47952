"""Robust rules where sites hold different modalities: a key too few sites sent to outvote an attacker."""
import pytest
import torch
from support import tiny_module, tiny_site

from federation.attacks import with_attackers
from federation.engine import InProcessEngine
from federation.robust import coordinate_median
from federation.strategies.fedavg import FedAvg
from federation.strategies.krum import MultiKrum
from federation.strategies.median import Median
from federation.strategies.norm_bounding import NormBounding
from federation.strategies.robust_groups import farthest_from, unweighted
from federation.strategies.trimmed_mean import TrimmedMean
from federation.update import ModelUpdate

SHARED = {"fusion.weight": (4, 4), "head.weight": (3, 4)}
IMAGING = {"imaging.weight": (6,)}  # sent by h0 and the attacker only: median of two is their mean
LABS = {"labs.weight": (5,)}        # sent by h0, h1 and the attacker


def _update(site: str, deltas: dict[str, torch.Tensor]) -> ModelUpdate:
    return ModelUpdate(site, 1, deltas, {k: 10 for k in deltas}, 10)


def _modality_round():
    """Four honest sites near the true direction; the attacker sends its own honest update sign-flipped, times 10."""
    g = torch.Generator().manual_seed(0)
    true = {k: torch.randn(s, generator=g) for k, s in (SHARED | IMAGING | LABS).items()}

    def honest(keys):
        return {k: true[k] + 0.05 * torch.randn(true[k].shape, generator=g) for k in keys}

    h = [_update("h0", honest(SHARED | IMAGING | LABS)), _update("h1", honest(SHARED | LABS)), _update("h2", honest(SHARED)), _update("h3", honest(SHARED))]
    evil = _update("evil", {k: -10 * d for k, d in honest(SHARED | IMAGING | LABS).items()})
    honest_mean = FedAvg().combine(h)
    return h[:2] + [evil] + h[2:], honest_mean


def _distance(deltas: dict, target: dict, keys) -> float:
    return float(torch.sqrt(sum(((deltas[k].double() - target[k].double()) ** 2).sum() for k in keys)))


@pytest.mark.parametrize(
    "strategy", [Median(), TrimmedMean(trim_fraction=0.25), MultiKrum(n_byzantine=1, n_selected=1), MultiKrum(n_byzantine=1, n_selected=2)], ids=repr
)
def test_a_key_the_attacker_shares_with_one_honest_site_stays_honest(strategy):
    # Prepare
    updates, honest_mean = _modality_round()

    # Execute
    combined = strategy.combine(updates)

    # Assert: the two-sender imaging key is h0's; the rest stays near the honest mean
    assert torch.allclose(combined["imaging.weight"].float(), updates[0].deltas["imaging.weight"])
    assert _distance(combined, honest_mean, LABS) < 0.2
    assert _distance(combined, honest_mean, SHARED) < 0.5
    assert "evil" in strategy.round_findings()


def test_a_clean_round_has_no_suspect_unless_asked_to_always_suspect_f():
    # Prepare: the attacker's slot holds an honest update instead
    updates, _ = _modality_round()
    updates[2] = _update("evil", {k: -d / 10 for k, d in updates[2].deltas.items()})  # undo the flip: honest again
    attacked, _ = _modality_round()

    # Execute / Assert
    assert farthest_from(unweighted(coordinate_median), updates, 1, "median") == {}
    assert len(farthest_from(unweighted(coordinate_median), updates, 1, "median", suspect_ratio=None)) == 1
    assert list(farthest_from(unweighted(coordinate_median), attacked, 1, "median")) == ["evil"]


@pytest.mark.parametrize("strategy", [Median(n_byzantine=0), TrimmedMean(trim_fraction=0.25, n_byzantine=0)], ids=repr)
def test_without_f_a_two_sender_key_is_the_attackers_to_steer(strategy):
    # Prepare
    updates, honest_mean = _modality_round()

    # Execute
    combined = strategy.combine(updates)

    # Assert: the old per-key rule, which the benchmark caught (median of two is their mean)
    assert _distance(combined, honest_mean, IMAGING) > 5 * _distance(honest_mean, {k: torch.zeros(s) for k, s in IMAGING.items()}, IMAGING) / 2
    assert strategy.round_findings() == {}


def test_trimmed_mean_trims_at_least_f_even_where_the_fraction_trims_nothing():
    # Prepare: three senders of labs, floor(0.25 * 3) = 0; the attacker stays in (suspects out of thin keys only)
    updates, honest_mean = _modality_round()

    # Execute
    at_least_f = TrimmedMean(trim_fraction=0.25, n_byzantine=1, exclude_suspects="thin_keys").combine(updates)
    fraction_only = TrimmedMean(trim_fraction=0.25, n_byzantine=0).combine(updates)

    # Assert
    assert _distance(at_least_f, honest_mean, LABS) < 0.2
    assert _distance(fraction_only, honest_mean, LABS) > 1.0


def test_krum_trains_a_modality_no_top_ranked_site_holds():
    # Prepare: h0 is the only honest imaging site; with n_selected=1 the best-scoring site overall may lack imaging
    updates, _ = _modality_round()
    strategy = MultiKrum(n_byzantine=1, n_selected=1)

    # Execute
    chosen = strategy.select(updates)

    # Assert: every key is trained, by exactly one site, never the attacker
    assert set(chosen) == {k for u in updates for k in u.deltas}
    assert all(len(sites) == 1 and sites[0].site != "evil" for sites in chosen.values())
    assert "a suspect: among the f=1 worst" in strategy.round_findings()["evil"]


def test_krum_leaves_out_the_worst_scoring_site_only_when_it_is_an_outlier():
    # Prepare: the attacker's slot holds an honest update instead
    clean, _ = _modality_round()
    clean[2] = _update("evil", {k: -d / 10 for k, d in clean[2].deltas.items()})
    attacked, _ = _modality_round()

    # Execute
    kept_clean = MultiKrum(n_byzantine=1, n_selected=5).select(clean)
    always_f = MultiKrum(n_byzantine=1, n_selected=5, suspect_ratio=None)
    kept_always = always_f.select(clean)
    kept_attacked = MultiKrum(n_byzantine=1, n_selected=5).select(attacked)

    # Assert: a clean round keeps every sender of every key; "always the f worst" drops one honest site everywhere
    assert all(len(chosen) == sum(key in u.deltas for u in clean) for key, chosen in kept_clean.items())
    dropped = set(always_f.round_findings())
    assert len(dropped) == 1 and all(u.site not in dropped for chosen in kept_always.values() for u in chosen)
    assert all(u.site != "evil" for chosen in kept_attacked.values() for u in chosen)


def test_adaptive_norm_bounding_limits_the_attacker_on_a_two_sender_key_to_the_honest_norm():
    # Prepare
    updates, honest_mean = _modality_round()
    imaging_norm = float(updates[0].deltas["imaging.weight"].norm())

    # Execute
    bounded = NormBounding().combine(updates)
    plain = FedAvg().combine(updates)

    # Assert: equal weights, the attacker clipped to h0's norm: the imaging mean moves at most that norm from h0's
    assert _distance(bounded, honest_mean, IMAGING) <= imaging_norm + 1e-5
    assert _distance(plain, honest_mean, IMAGING) > 4 * imaging_norm
    assert _distance(bounded, honest_mean, SHARED) < 0.5 * _distance(plain, honest_mean, SHARED)


def test_a_key_only_suspects_sent_keeps_its_global_value():
    # Prepare: only the attacker sends "extra"
    updates, _ = _modality_round()
    updates[2].deltas["extra.weight"] = torch.full((2,), 50.0)
    updates[2].sample_counts["extra.weight"] = 10
    global_state = {k: torch.zeros(v.shape) for u in updates for k, v in u.deltas.items()}

    # Execute
    state = Median().aggregate(global_state, updates)

    # Assert
    assert torch.equal(state["extra.weight"], torch.zeros(2))


def test_the_round_record_says_which_site_was_left_out_of_what_and_why():
    # Prepare: five tiny sites, two with imaging; one of these flips its update
    sites = [tiny_site(n, 6, n in "ab", i) for i, n in enumerate("abcde")]
    sites = with_attackers(sites, [{"site": "b", "kind": "sign_flip", "scale": 10}])

    # Execute
    result = InProcessEngine(sites, tiny_module(), Median(), 1, {"max_epochs": 1}, seed=0).run(progress=False)

    # Assert
    found = result.records[0].extra["aggregation"]
    assert list(found) == ["b"]
    assert "a suspect of this round" in found["b"] and "farthest from the coordinate-wise median" in found["b"]


@pytest.mark.parametrize("strategy", [Median(), TrimmedMean(trim_fraction=0.25)], ids=repr)
def test_a_suspect_is_left_out_of_every_key_unless_only_thin_keys_are_asked_for(strategy):
    # Prepare
    updates, _ = _modality_round()
    honest = [u for u in updates if u.site != "evil"]
    thin_only = type(strategy)(**({"trim_fraction": 0.25} if isinstance(strategy, TrimmedMean) else {}), exclude_suspects="thin_keys")

    # Execute
    everywhere = strategy.combine(updates)
    thin = thin_only.combine(updates)
    without_attacker = type(thin_only)(**({"trim_fraction": 0.25} if isinstance(strategy, TrimmedMean) else {}), n_byzantine=1).combine(honest)

    # Assert: on the shared keys, all_keys is the rule over the honest sites alone; thin_keys lets the outvoted
    # attacker pick which honest value is the median, and says only that it was left out of thin keys
    for key in SHARED:
        assert torch.allclose(everywhere[key], without_attacker[key])
        assert not torch.allclose(thin[key], without_attacker[key])
    assert "a suspect of this round" in strategy.round_findings()["evil"]
    assert "sent by fewer than 3 sites" in thin_only.round_findings()["evil"]


def test_an_unknown_exclusion_scope_is_refused():
    with pytest.raises(ValueError, match=r"exclude_suspects must be one of \('all_keys', 'thin_keys'\), got 'everywhere'"):
        Median(exclude_suspects="everywhere")


def test_norm_bounding_leaves_a_far_suspect_out_before_clipping():
    # Prepare
    updates, _ = _modality_round()
    honest = [u for u in updates if u.site != "evil"]

    # Execute
    strategy = NormBounding()
    with_suspects_out = strategy.combine(updates)
    honest_only = NormBounding(n_byzantine=0).combine(honest)

    # Assert
    assert all(torch.allclose(with_suspects_out[k], honest_only[k]) for k in honest_only)
    assert set(with_suspects_out) == set(honest_only)
    assert "a suspect of this round" in strategy.round_findings()["evil"]
