"""Participation and the update validator in the engine: sampling, crashes, deadlines, minimums, refusals."""
import pytest
import torch
from support import tiny_module, tiny_site

from federation.engine import InProcessEngine
from federation.participation import Participation
from federation.round_record import (
    ACCEPTED,
    FAILED,
    REJECTED,
    ROUND_ACCEPTED,
    ROUND_FAILED,
    SKIPPED,
)
from federation.state import get_state, trainable_keys
from federation.strategies.fedavg import FedAvg
from federation.update import ModelUpdate
from federation.validation import UpdateValidator

LIMITS = {"max_epochs": 1}


class CrashingSite:
    """Wraps a site so that its training raises in the given rounds."""

    def __init__(self, site, crash_rounds):
        self._site, self.crash_rounds = site, set(crash_rounds)

    def __getattr__(self, name):
        return getattr(self._site, name)

    def train(self, module, state, limits, round_, seed, objective=None):
        if round_ in self.crash_rounds:
            raise ConnectionError("site lost its network")
        return self._site.train(module, state, limits, round_, seed, objective)


class SimulatedClock:
    """Seconds that pass only when a simulated site says so: deadline tests independent of machine load."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class SlowSite(CrashingSite):
    """Takes `delay` simulated seconds for its training."""

    def __init__(self, site, delay, clock):
        super().__init__(site, ())
        self.delay, self.clock = delay, clock

    def train(self, *args, **kwargs):
        update = self._site.train(*args, **kwargs)
        self.clock.now += self.delay
        return update


class PoisoningSite(CrashingSite):
    """Sends NaN in its update."""

    def train(self, *args, **kwargs):
        update = self._site.train(*args, **kwargs)
        key = next(iter(update.deltas))
        update.deltas[key] = torch.full_like(update.deltas[key], float("nan"))
        return update


def sites(n=4):
    return [tiny_site(f"s{i}", 6, i % 2 == 0, seed=i) for i in range(n)]


def engine(site_list, rounds=1, **kwargs):
    return InProcessEngine(site_list, tiny_module(), FedAvg(), rounds, LIMITS, seed=0, **kwargs)


def statuses(record):
    return {o.site: o.status for o in record.outcomes}


def test_a_fraction_of_sites_is_sampled_deterministically_and_varies_over_rounds():
    participation = Participation(fraction=0.5)
    samples = [participation.sample(10, round_, 0, seed=3) for round_ in range(1, 6)]

    assert all(len(s) == 5 and s == sorted(set(s)) for s in samples)
    assert samples == [participation.sample(10, round_, 0, seed=3) for round_ in range(1, 6)]
    assert len({tuple(s) for s in samples}) > 1
    assert len(Participation(fraction=0.1, min_sites=3).sample(10, 1, 0, seed=0)) == 3


def test_unsampled_sites_are_recorded_as_skipped_and_not_trained():
    result = engine(sites(), rounds=2, participation=Participation(fraction=0.5)).run(progress=False)

    for record in result.records:
        assert sorted(statuses(record).values()).count(SKIPPED) == 2
        assert all(o.val_metrics for o in record.outcomes)  # every site validates the new global model


def test_a_crashing_site_is_left_out_of_that_round_and_rejoins_later():
    site_list = sites()
    site_list[1] = CrashingSite(site_list[1], crash_rounds=[1])
    result = engine(site_list, rounds=2).run(progress=False)

    first, second = result.records
    assert first.decision == ROUND_ACCEPTED and statuses(first)["s1"] == FAILED
    assert "ConnectionError" in first.outcome("s1").reason
    assert sorted(first.participants()) == ["s0", "s2", "s3"]
    assert statuses(second)["s1"] == ACCEPTED
    assert {row["status"] for row in result.history if row["round"] == 1 and row["site"] == "s1"} == {FAILED}


def test_a_site_that_misses_the_deadline_is_left_out_of_that_round():
    clock = SimulatedClock()
    site_list = [SlowSite(s, delay, clock) for s, delay in zip(sites(3), (0.1, 0.4, 1.0))]
    record = engine(site_list, participation=Participation(deadline_s=0.5), clock=clock).run(progress=False).records[0]

    assert statuses(record) == {"s0": ACCEPTED, "s1": ACCEPTED, "s2": FAILED}
    assert "missed the deadline" in record.outcome("s2").reason


def test_a_round_short_of_the_minimum_fails_and_leaves_the_global_model_unchanged():
    site_list = sites(3)
    site_list[0] = CrashingSite(site_list[0], crash_rounds=[1])
    run = engine(site_list, participation=Participation(min_sites=3))
    before = get_state(run.module, trainable_keys(run.module))
    record = run.run(progress=False).records[0]

    assert record.decision == ROUND_FAILED and "fewer than participation.min_sites=3" in record.reason
    assert all(torch.equal(before[k], record.global_state[k]) for k in before)


@pytest.mark.parametrize("retries, decision", [(0, ROUND_FAILED), (1, ROUND_ACCEPTED)])
def test_a_short_round_is_retried_with_sites_not_yet_asked(retries, decision):
    participation = Participation(fraction=0.5, min_sites=2, retries=retries)
    first = participation.sample(4, 1, 0, seed=0)
    site_list = [CrashingSite(s, [1]) if i in first else s for i, s in enumerate(sites(4))]
    record = engine(site_list, participation=participation).run(progress=False).records[0]

    assert record.decision == decision
    others = sorted(s.name for i, s in enumerate(site_list) if i not in first)
    assert sorted(record.participants()) == (others if retries else [])
    assert all(record.outcome(site_list[i].name).status == FAILED for i in first)


def test_when_every_site_crashes_the_error_surfaces():
    site_list = [CrashingSite(s, crash_rounds=[1]) for s in sites(2)]

    with pytest.raises(RuntimeError, match="every site crashed") as info:
        engine(site_list).run(progress=False)
    assert isinstance(info.value.__cause__, ConnectionError)


def test_a_nan_update_is_rejected_with_its_reason_and_the_round_goes_on():
    site_list = sites(3)
    site_list[1] = PoisoningSite(site_list[1], ())
    record = engine(site_list).run(progress=False).records[0]

    assert statuses(record)["s1"] == REJECTED and "NaN" in record.outcome("s1").reason
    assert record.decision == ROUND_ACCEPTED
    assert all(torch.isfinite(t).all() for t in record.global_state.values())


def test_the_validator_refuses_each_malformed_update_and_outlying_norms():
    site_list = sites(4)
    module = tiny_module()
    state = get_state(module, trainable_keys(module))
    updates = [s.train(module, state, LIMITS, 1, seed=i) for i, s in enumerate(site_list)]
    key = sorted(set.intersection(*(set(u.deltas) for u in updates)))[0]  # one every site sends (the head's)
    updates[0].deltas["not.a.parameter"] = torch.zeros(1)
    updates[0].sample_counts["not.a.parameter"] = 1
    updates[1].deltas[key] = updates[1].deltas[key].double()
    updates[2].deltas[key] = torch.zeros(99)
    accepted, rejected = UpdateValidator().screen(updates, state)

    assert [u.site for u in accepted] == ["s3"]
    assert "unknown parameter" in rejected["s0"]
    assert "dtype" in rejected["s1"]
    assert "shape" in rejected["s2"]

    honest = [s.train(module, state, LIMITS, 1, seed=i) for i, s in enumerate(site_list)]
    honest[3].deltas = {k: v * 1000 for k, v in honest[3].deltas.items()}
    accepted, rejected = UpdateValidator(max_norm_ratio=10).screen(honest, state)
    assert list(rejected) == ["s3"] and "cohort median" in rejected["s3"]
    assert len(UpdateValidator(max_norm_ratio=None).screen(honest, state)[0]) == 4


def test_the_norm_rule_compares_sites_on_the_parameters_they_all_sent():
    site_list = sites(4)  # s0, s2 train the imaging encoder too; s1, s3 only labs
    module = tiny_module()
    state = get_state(module, trainable_keys(module))
    updates = [s.train(module, state, LIMITS, 1, seed=i) for i, s in enumerate(site_list)]
    imaging = [k for k in updates[0].deltas if "imaging" in k]
    updates[0].deltas.update({k: updates[0].deltas[k] * 1000 for k in imaging})  # huge, but only where others have nothing

    accepted, rejected = UpdateValidator(max_norm_ratio=10).screen(updates, state)
    assert not rejected and len(accepted) == 4


def test_participation_settings_are_checked():
    with pytest.raises(ValueError, match="fraction"):
        Participation(fraction=0)
    with pytest.raises(ValueError, match="min_sites"):
        engine(sites(2), participation=Participation(min_sites=3))
    with pytest.raises(ValueError, match="max_norm_ratio"):
        UpdateValidator(max_norm_ratio=0.5)


def test_the_direction_rule_refuses_a_flipped_update_the_norm_rule_cannot_see():
    # Prepare: four sites near one direction, a fifth sends its update sign-flipped at half the size
    g = torch.Generator().manual_seed(0)
    true = {"head.weight": torch.randn(3, 4, generator=g), "head.bias": torch.randn(3, generator=g)}
    state = {k: torch.zeros_like(v) for k, v in true.items()}

    def update(site: str, sign: float) -> ModelUpdate:
        deltas = {k: sign * (v + 0.3 * torch.randn(v.shape, generator=g)) for k, v in true.items()}
        return ModelUpdate(site, 1, deltas, {k: 10 for k in deltas}, 10)

    updates = [update(f"h{i}", 1.0) for i in range(4)] + [update("flipped", -0.5)]

    # Execute
    _, norm_only = UpdateValidator().screen(updates, state)
    accepted, rejected = UpdateValidator(min_cosine=0.0).screen(updates, state)

    # Assert
    assert norm_only == {}
    assert list(rejected) == ["flipped"] and "coordinate-wise median" in rejected["flipped"]
    assert [u.site for u in accepted] == ["h0", "h1", "h2", "h3"]
    with pytest.raises(ValueError, match="min_cosine"):
        UpdateValidator(min_cosine=2.0)
