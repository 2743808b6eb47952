"""Secure aggregation: exact sums, masked views that look random, dropout recovery, modality-aware groups."""
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from scipy import stats
from support import compose_config

from federation.aggregate import weighted_mean_per_key
from federation.privacy import shamir
from federation.privacy.fixed_point import FixedPointCodec, OverflowRisk
from federation.privacy.messages import MaskedInput, UnmaskRequest
from federation.privacy.secagg import (
    SecAggClient,
    SecAggError,
    SecAggServer,
    resolve_threshold,
    run_secure_aggregation,
)
from federation.strategies.fedavg import FedAvg
from federation.strategies.secure_fedavg import SecureFedAvg
from federation.update import ModelUpdate

SHAPES = {"encoders.imaging.w": (6, 5), "encoders.labs.w": (4,), "fusion.w": (3, 3), "head.b": (2,)}
SHARED = ["fusion.w", "head.b"]
HOLDINGS = {  # modality-aware: imaging at three sites, labs at three, shared keys everywhere
    "s1": SHARED + ["encoders.imaging.w", "encoders.labs.w"],
    "s2": SHARED + ["encoders.imaging.w"],
    "s3": SHARED + ["encoders.labs.w"],
    "s4": SHARED + ["encoders.imaging.w", "encoders.labs.w"],
    "s5": SHARED + ["encoders.labs.w"],
}


def make_updates(seed=0, holdings=HOLDINGS, scale=0.1, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    updates = []
    for i, (site, keys) in enumerate(holdings.items()):
        deltas = {k: torch.randn(shapes[k], generator=g) * scale for k in keys}
        updates.append(ModelUpdate(site, 1, deltas, {k: 7 + 3 * i for k in keys}, 7 + 3 * i))
    return updates


def clients_of(updates):
    return [SecAggClient(u.site, u.deltas, u.sample_counts) for u in updates]


def plain_means(updates):
    return weighted_mean_per_key((u.deltas, u.sample_counts) for u in updates)


def assert_close_to_plain(result, updates, precision_bits=20):
    expected = plain_means(updates)
    assert set(result) == set(expected)
    n = len(updates)
    for key, value in expected.items():
        # rounding: at most 1/2 * 2^-p per site on each weighted sum, divided by at least one count
        assert torch.allclose(result[key], value, atol=n * 2.0 ** -(precision_bits + 1) + 1e-6), key


# --- Prepare / Execute / Assert: the pieces ---------------------------------------------------------

@pytest.mark.parametrize("t, n", [(2, 3), (3, 5), (5, 5)])
def test_shamir_any_t_shares_rebuild_fewer_refuse(t, n):
    secret = bytes(range(32))
    shares = list(shamir.split(secret, t, list(range(1, n + 1))).values())

    assert shamir.combine(shares[:t], t, 32) == secret
    assert shamir.combine(shares[-t:], t, 32) == secret
    with pytest.raises(shamir.NotEnoughShares, match=f"{t} are needed"):
        shamir.combine(shares[: t - 1], t, 32)


def test_shamir_shares_of_one_secret_differ_between_splits():
    first = shamir.split(b"\x01" * 32, 3, [1, 2, 3, 4])
    second = shamir.split(b"\x01" * 32, 3, [1, 2, 3, 4])

    assert first[1].y != second[1].y  # fresh random polynomial each time


def test_codec_width_is_derived_from_sites_clip_counts_and_precision():
    small = FixedPointCodec(n_sites=5, clip=1.0, precision_bits=12, max_count=100)
    large = FixedPointCodec(n_sites=50, clip=100.0, precision_bits=20, max_count=1_000_000)

    assert small.bits == 32 and large.bits == 64
    with pytest.raises(OverflowRisk, match="lower precision_bits"):
        FixedPointCodec(n_sites=50, clip=100.0, precision_bits=40, max_count=1_000_000)


def test_codec_sum_of_extreme_values_does_not_wrap():
    codec = FixedPointCodec(n_sites=7, clip=2.0, precision_bits=10, max_count=300)
    extreme = codec.max_count * codec.clip
    total = np.zeros(4, dtype=codec.dtype)

    for _ in range(codec.n_sites):
        total = total + codec.encode(np.array([extreme, -extreme, 0.5]), np.array([codec.max_count]))
    weighted, counts = codec.decode(total, 1)

    assert weighted.tolist() == [7 * extreme, -7 * extreme, 3.5]
    assert counts.tolist() == [7 * 300]


@pytest.mark.parametrize("threshold, n, t", [(0.6, 5, 3), (0.6, 3, 2), (3, 4, 3), (1, 1, 1)])
def test_threshold_resolves_to_a_strict_majority(threshold, n, t):
    assert resolve_threshold(threshold, n) == t


@pytest.mark.parametrize("threshold, n", [(2, 4), (0.4, 5), (6, 5)])
def test_threshold_without_a_strict_majority_is_refused(threshold, n):
    with pytest.raises(ValueError, match="t must be in"):
        resolve_threshold(threshold, n)


# --- the protocol -------------------------------------------------------------------------------------

def test_unmasked_sum_equals_plain_weighted_mean_per_key():
    updates = make_updates()

    result = run_secure_aggregation(clients_of(updates), SecAggServer(threshold=3), round_=1)

    assert_close_to_plain(result.means(), updates)
    assert result.counts["encoders.imaging.w"] == sum(u.sample_counts.get("encoders.imaging.w", 0) for u in updates)


def test_masks_run_only_among_the_holders_of_each_key():
    masked = {}
    updates = make_updates()

    run_secure_aggregation(clients_of(updates), SecAggServer(threshold=3), 1,
                           observe=lambda site, m: masked.__setitem__(site, m) if isinstance(m, MaskedInput) else None)

    groups = {g.keys: g for g in roster_of(updates).groups}
    assert set(groups[("encoders.imaging.w",)].holders) == {"s1", "s2", "s4"}
    assert set(groups[("encoders.labs.w",)].holders) == {"s1", "s3", "s4", "s5"}
    assert set(groups[("fusion.w", "head.b")].holders) == set(HOLDINGS)
    assert set(masked["s2"].vectors) == {groups[("encoders.imaging.w",)].id, groups[("fusion.w", "head.b")].id}


def roster_of(updates):
    server = SecAggServer(threshold=3)
    return server.roster([c.advertise(1) for c in clients_of(updates)], 1)


def test_coordinator_view_of_a_masked_update_is_uncorrelated_and_uniform():
    big = {"s1": ["w"], "s2": ["w"], "s3": ["w"]}
    updates = make_updates(holdings=big, shapes={"w": (20_000,)})
    updates[0].deltas["w"] = torch.linspace(-1, 1, 20_000)  # strongly structured: a leak would show
    masked = {}

    run_secure_aggregation(clients_of(updates), SecAggServer(threshold=2), 1,
                           observe=lambda site, m: masked.__setitem__(site, m) if isinstance(m, MaskedInput) else None)
    view = masked["s1"].vectors[0][:-1].astype(np.float64) / 2.0**64
    truth = updates[0].deltas["w"].double().numpy()
    codec = FixedPointCodec(3, 100.0, 20, 1_000_000)
    unmasked = codec.encode(truth * updates[0].sample_counts["w"], np.array([1]))[:-1].astype(np.float64) / 2.0**64

    assert abs(np.corrcoef(view, truth)[0, 1]) < 5 / np.sqrt(len(truth))
    assert stats.kstest(view, "uniform").pvalue > 1e-3
    assert stats.kstest(unmasked, "uniform").pvalue < 1e-10  # the same test does reject an unmasked encoding


@pytest.mark.parametrize("dropouts", [
    {},
    {"s2": "mask"},
    {"s2": "mask", "s5": "mask"},
    {"s3": "share", "s4": "mask"},
    {"s1": "unmask", "s4": "unmask"},
    {"s2": "mask", "s3": "unmask"},
])
def test_up_to_n_minus_t_dropouts_recover_the_survivors_mean(dropouts):
    updates = make_updates(seed=1)
    survivors = [u for u in updates if dropouts.get(u.site) not in ("share", "mask")]

    result = run_secure_aggregation(clients_of(updates), SecAggServer(threshold=3), 1, dropouts=dropouts)

    assert_close_to_plain(result.means(), survivors)


@pytest.mark.parametrize("dropouts", [
    {"s1": "mask", "s2": "mask", "s3": "mask"},
    {"s1": "share", "s2": "mask", "s3": "unmask"},
    {"s1": "unmask", "s2": "unmask", "s3": "unmask"},
])
def test_more_than_n_minus_t_dropouts_fail_loudly(dropouts):
    updates = make_updates(seed=2)

    with pytest.raises(SecAggError, match=r"at most n - t = 2 dropouts are tolerated"):
        run_secure_aggregation(clients_of(updates), SecAggServer(threshold=3), 1, dropouts=dropouts)


def test_a_key_left_with_one_surviving_holder_is_not_revealed(caplog):
    holdings = {"s1": ["head.b", "encoders.labs.w"], "s2": ["head.b", "encoders.labs.w"], "s3": ["head.b"]}
    updates = make_updates(holdings=holdings)

    result = run_secure_aggregation(clients_of(updates), SecAggServer(threshold=2), 1, dropouts={"s2": "mask"})

    assert "encoders.labs.w" not in result.means()
    assert "fewer than min_group_size" in caplog.text
    assert_close_to_plain({"head.b": result.means()["head.b"]}, [replace_keys(u, ["head.b"]) for u in updates if u.site != "s2"])


def replace_keys(update, keys):
    return ModelUpdate(update.site, update.round, {k: update.deltas[k] for k in keys}, {k: update.sample_counts[k] for k in keys}, update.n_samples)


def test_a_site_never_reveals_both_secrets_of_one_peer():
    updates = make_updates()
    clients, server = clients_of(updates), SecAggServer(threshold=3)
    roster = server.roster([c.advertise(1) for c in clients], 1)
    routed = server.route([c.share_keys(roster) for c in clients])
    for c in clients:
        c.receive_shares(routed[c.site])
    sites = tuple(sorted(HOLDINGS))
    clients[0].unmask(UnmaskRequest(1, sites[:4], sites[4:]))

    with pytest.raises(SecAggError, match="contradicting"):
        clients[0].unmask(UnmaskRequest(1, sites[:3] + sites[4:], sites[3:4]))


def test_a_site_refuses_a_roster_without_its_own_keys():
    clients = clients_of(make_updates())
    server = SecAggServer(threshold=3)
    adverts = [c.advertise(1) for c in clients]
    roster = server.roster(adverts, 1)
    swapped = dict(roster.mask_public, s1=roster.mask_public["s2"])

    with pytest.raises(SecAggError, match="own public keys"):
        clients[0].share_keys(type(roster)(**{**roster.__dict__, "mask_public": swapped}))


# --- the strategy -------------------------------------------------------------------------------------

def test_secure_fedavg_aggregates_as_fedavg_does():
    updates = make_updates(seed=3)
    state = {k: torch.zeros(s) for k, s in SHAPES.items()}

    secure = SecureFedAvg(threshold=3).aggregate(state, updates)
    plain = FedAvg().aggregate(state, updates)

    for key in state:
        assert torch.allclose(secure[key], plain[key], atol=1e-5), key


def test_secure_fedavg_config_composes_and_builds():
    cfg = compose_config(["federation=secure_fedavg"])

    strategy = instantiate(cfg.federation.strategy)

    assert isinstance(strategy, SecureFedAvg)
    assert cfg.federation.rounds >= 1 and "local_epochs" in cfg.federation
