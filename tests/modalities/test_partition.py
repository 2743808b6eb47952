"""Cutting one collection into sites: deterministic for a seed, whole groups, no empty site, skew that follows alpha."""
from collections import Counter

import numpy as np
import pytest

from modalities.partition import (
    label_skew,
    partition_by_group,
    partition_by_key,
    partition_dirichlet,
    partition_iid,
    partition_records,
    split_site,
)

LABELS = [f"L{k}" for k in np.random.default_rng(0).integers(0, 5, size=600)]


def test_by_key_makes_one_site_per_value():
    partition = partition_by_key(["b", "a", "b", "c"])

    assert partition.names == ("a", "b", "c")
    assert partition.site_of == (1, 0, 1, 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_groups_stay_whole_and_sites_are_balanced(seed):
    groups = [f"pmid{g}" for g in np.random.default_rng(seed).integers(0, 40, size=500)]

    partition = partition_by_group(groups, num_sites=4, seed=seed)

    site_of_group = {}
    for group, site in zip(groups, partition.site_of):
        assert site_of_group.setdefault(group, site) == site
    sizes = partition.sizes()
    assert min(sizes) > 0
    assert max(sizes) - min(sizes) <= max(Counter(groups).values())


def test_groups_fewer_than_sites_is_an_error():
    with pytest.raises(ValueError, match="2 groups cannot fill 3 sites"):
        partition_by_group(["a", "b", "a"], num_sites=3, seed=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: partition_dirichlet(LABELS, 4, alpha=0.5, seed=seed),
        lambda seed: partition_iid(LABELS, 4, seed=seed),
        lambda seed: partition_by_group([label + str(i % 7) for i, label in enumerate(LABELS)], 4, seed=seed),
    ],
    ids=["dirichlet", "iid", "group"],
)
def test_same_seed_same_sites_other_seed_other_sites(make):
    assert make(3) == make(3)
    assert make(3).site_of != make(4).site_of


@pytest.mark.parametrize("alpha", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("seed", range(5))
def test_dirichlet_leaves_no_site_empty_in_any_stratum(alpha, seed):
    strata = ["test" if i % 5 == 0 else "train" for i in range(len(LABELS))]

    partition = partition_dirichlet(LABELS, num_sites=6, alpha=alpha, seed=seed, strata=strata)

    for stratum in ("train", "test"):
        counts = Counter(s for s, st in zip(partition.site_of, strata) if st == stratum)
        assert all(counts[site] >= 1 for site in range(6)), (stratum, counts)


def test_small_alpha_skews_labels_more_than_large_alpha():
    skew = {
        alpha: np.mean([label_skew(LABELS, partition_dirichlet(LABELS, 5, alpha, seed)) for seed in range(5)])
        for alpha in (0.1, 1.0, 100.0)
    }
    iid = label_skew(LABELS, partition_iid(LABELS, 5, seed=0))

    assert skew[0.1] > skew[1.0] > skew[100.0] > iid
    assert iid < 0.02


def test_dirichlet_applies_the_same_label_mix_in_every_stratum():
    strata = ["test" if i % 4 == 0 else "train" for i in range(len(LABELS))]
    partition = partition_dirichlet(LABELS, 3, alpha=0.3, seed=0, strata=strata)

    for site in range(3):
        train = Counter(LABELS[i] for i in partition.members(site) if strata[i] == "train")
        test = Counter(LABELS[i] for i in partition.members(site) if strata[i] == "test")
        top_train = train.most_common(1)[0][0]
        assert test[top_train] == max(test.values())


def test_partition_records_dispatches_and_checks_its_inputs():
    assert partition_records("iid", LABELS, seed=0, num_sites=3).names == ("site_0", "site_1", "site_2")
    with pytest.raises(ValueError, match="needs a key"):
        partition_records("group", LABELS, seed=0, num_sites=3)
    with pytest.raises(ValueError, match="needs alpha"):
        partition_records("dirichlet", LABELS, seed=0, num_sites=3)
    with pytest.raises(ValueError, match="unknown partition scheme"):
        partition_records("random", LABELS, seed=0, num_sites=3)


def test_site_split_is_stratified_and_seeded():
    ids = [f"r{i}" for i in range(100)]
    labels = ["a"] * 50 + ["b"] * 50

    split = split_site(ids, labels, seed=0, fractions={"train": 0.6, "val": 0.2, "test": 0.2})

    assert split == split_site(ids, labels, seed=0, fractions={"train": 0.6, "val": 0.2, "test": 0.2})
    assert [len(split[s]) for s in ("train", "val", "test")] == [60, 20, 20]
    assert sum(i in ids[:50] for i in split["test"]) == 10
