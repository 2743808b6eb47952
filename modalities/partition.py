"""Partition one real collection into simulated sites, then split each site into train/val/test.

A public collection (an image archive, a table, a phenopacket store) is one pool
of records; federated research needs it cut into sites the way real consortia
differ. Three ways, all pure and seeded (same inputs and seed, same sites):

- by key: every distinct value of an attribute is a site (the hospital column of a
  table, or the source file the record came from: "by file");
- by group: whole groups (e.g. the publication a case came from) are dealt to
  `num_sites` sites, largest first to the currently smallest site, so no group is
  split across sites and sites are balanced by size;
- by label skew: for every label, the shares of its records going to each site are
  drawn from Dirichlet(alpha) (Hsu, Qi & Brown 2019, "Measuring the effects of
  non-identical data distribution for federated visual classification",
  arXiv:1909.06335). Small alpha gives each site a few dominant labels, large alpha
  approaches an i.i.d. split (`iid` is the stratified even split).

A site is returned as the positions of its records in the input, so callers keep
their own record type. `label_skew` measures how non-i.i.d. a partition is.
"""
from __future__ import annotations

import math
import zlib
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from modalities.splits import DEFAULT_FRACTIONS, draw_split

SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "key", "group")


@dataclass(frozen=True)
class Partition:
    """`site_of[i]`: the site index of record i; `names[s]`: the name of site s."""

    site_of: tuple[int, ...]
    names: tuple[str, ...]

    def members(self, site: int) -> list[int]:
        return [i for i, s in enumerate(self.site_of) if s == site]

    def sizes(self) -> list[int]:
        counts = Counter(self.site_of)
        return [counts.get(s, 0) for s in range(len(self.names))]


def site_names(num_sites: int) -> tuple[str, ...]:
    width = len(str(num_sites - 1))
    return tuple(f"site_{s:0{width}d}" for s in range(num_sites))


def partition_by_key(keys: Sequence[Hashable]) -> Partition:
    """One site per distinct key value (sorted by value as text), e.g. a hospital column or the source file."""
    if not keys:
        raise ValueError("nothing to partition: no records")
    names = sorted({str(k) for k in keys})
    index = {name: s for s, name in enumerate(names)}
    return Partition(tuple(index[str(k)] for k in keys), tuple(names))


def partition_by_group(groups: Sequence[Hashable], num_sites: int, seed: int) -> Partition:
    """Deal whole groups to `num_sites` sites, balanced by size (largest group first to the smallest site).

    Ties between equal-sized groups are broken by a seeded shuffle, so the seed
    changes which groups share a site but never splits a group.
    """
    _check_num_sites(num_sites)
    sizes = Counter(str(g) for g in groups)
    if len(sizes) < num_sites:
        raise ValueError(f"{len(sizes)} groups cannot fill {num_sites} sites (each group goes wholly to one site)")
    rng = np.random.default_rng([seed, 0x67726F75])
    shuffled = [sorted(sizes)[i] for i in rng.permutation(len(sizes))]
    order = sorted(shuffled, key=lambda g: -sizes[g])  # stable: the shuffle breaks ties
    load = [0] * num_sites
    site_of_group: dict[str, int] = {}
    for group in order:
        site = min(range(num_sites), key=lambda s: (load[s], s))
        site_of_group[group] = site
        load[site] += sizes[group]
    return Partition(tuple(site_of_group[str(g)] for g in groups), site_names(num_sites))


def partition_dirichlet(
    labels: Sequence[Hashable],
    num_sites: int,
    alpha: float,
    seed: int,
    strata: Sequence[Hashable] | None = None,
    min_per_site: int = 1,
) -> Partition:
    """Label skew: label k's records go to the sites in proportions p_k ~ Dirichlet(alpha * 1).

    The proportions are drawn once per label and applied within every stratum
    (e.g. a collection's own train/test split), so a site's test records follow
    the same label mix as its training records. Every site gets at least
    `min_per_site` records of every stratum: where the draw leaves fewer, records
    are moved from the largest site of that stratum (its most frequent label).
    """
    _check_num_sites(num_sites)
    if not alpha > 0:
        raise ValueError(f"Dirichlet alpha must be > 0, got {alpha}")
    rng = np.random.default_rng([seed, 0x64697269])
    label_names = sorted({str(label) for label in labels})
    shares = {label: rng.dirichlet([float(alpha)] * num_sites) for label in label_names}
    return _cut(labels, num_sites, shares, seed, strata, min_per_site)


def partition_iid(
    labels: Sequence[Hashable], num_sites: int, seed: int, strata: Sequence[Hashable] | None = None, min_per_site: int = 1
) -> Partition:
    """Stratified even split: every site gets about the same share of every label (of every stratum)."""
    _check_num_sites(num_sites)
    even = np.full(num_sites, 1.0 / num_sites)
    return _cut(labels, num_sites, {str(label): even for label in set(map(str, labels))}, seed, strata, min_per_site)


def partition_records(
    scheme: str,
    labels: Sequence[Hashable],
    seed: int,
    num_sites: int | None = None,
    alpha: float | None = None,
    keys: Sequence[Hashable] | None = None,
    strata: Sequence[Hashable] | None = None,
) -> Partition:
    """Dispatch on the configured scheme (`iid`, `dirichlet`, `key`, `group`); `keys` feed `key` and `group`."""
    if scheme in ("key", "group") and keys is None:
        raise ValueError(f"partition scheme {scheme!r} needs a key for every record (e.g. a column name in config)")
    if scheme == "key":
        return partition_by_key(keys)
    if num_sites is None:
        raise ValueError(f"partition scheme {scheme!r} needs num_sites")
    if scheme == "group":
        return partition_by_group(keys, num_sites, seed)
    if scheme == "dirichlet":
        if alpha is None:
            raise ValueError("partition scheme 'dirichlet' needs alpha")
        return partition_dirichlet(labels, num_sites, alpha, seed, strata)
    if scheme == "iid":
        return partition_iid(labels, num_sites, seed, strata)
    raise ValueError(f"unknown partition scheme {scheme!r}; known: {', '.join(SCHEMES)}")


def label_skew(labels: Sequence[Hashable], partition: Partition) -> float:
    """Mean over sites of the total-variation distance between a site's label histogram and the global one (0 = i.i.d.)."""
    label_names = sorted({str(label) for label in labels})
    index = {label: k for k, label in enumerate(label_names)}
    counts = np.zeros((len(partition.names), len(label_names)))
    for label, site in zip(labels, partition.site_of):
        counts[site, index[str(label)]] += 1
    overall = counts.sum(0) / counts.sum()
    filled = counts.sum(1) > 0
    per_site = counts[filled] / counts[filled].sum(1, keepdims=True)
    return float(0.5 * np.abs(per_site - overall).sum(1).mean())


@dataclass(frozen=True)
class _Record:
    """What `draw_split` needs of a record."""

    patient_id: str
    label: str


def split_site(
    ids: Sequence[str], labels: Sequence[Hashable], seed: int, fractions: Mapping[str, float] | None = None
) -> dict[str, list[str]]:
    """Seeded train/val/test split of one site's records, stratified by label (modalities.splits.draw_split)."""
    if len(set(ids)) != len(ids):
        raise ValueError("record ids must be unique within a site")
    records = [_Record(str(i), str(label)) for i, label in zip(ids, labels)]
    return draw_split(records, seed, fractions or DEFAULT_FRACTIONS)


def _cut(
    labels: Sequence[Hashable],
    num_sites: int,
    shares: Mapping[str, np.ndarray],
    seed: int,
    strata: Sequence[Hashable] | None,
    min_per_site: int,
) -> Partition:
    if not labels:
        raise ValueError("nothing to partition: no records")
    strata = [None] * len(labels) if strata is None else list(strata)
    if len(strata) != len(labels):
        raise ValueError(f"{len(strata)} strata for {len(labels)} records")
    cells: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (label, stratum) in enumerate(zip(labels, strata)):
        cells[(str(stratum), str(label))].append(i)
    site_of = [0] * len(labels)
    for (stratum, label), members in sorted(cells.items()):
        rng = np.random.default_rng([seed, zlib.crc32(f"{stratum}\0{label}".encode())])
        order = [members[j] for j in rng.permutation(len(members))]
        counts = _round_shares(len(order), shares[label])
        start = 0
        for site, count in enumerate(counts):
            for i in order[start : start + count]:
                site_of[i] = site
            start += count
    for stratum in sorted({str(s) for s in strata}):
        _fill_empty_sites(site_of, [i for i, s in enumerate(strata) if str(s) == stratum], labels, num_sites, min_per_site)
    return Partition(tuple(site_of), site_names(num_sites))


def _round_shares(n: int, shares: np.ndarray) -> list[int]:
    """Largest-remainder rounding of n * shares."""
    quotas = [n * float(s) for s in shares]
    counts = [math.floor(q) for q in quotas]
    for i in sorted(range(len(shares)), key=lambda i: (-(quotas[i] - counts[i]), i))[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _fill_empty_sites(site_of: list[int], members: list[int], labels: Sequence[Hashable], num_sites: int, minimum: int) -> None:
    if len(members) < num_sites * minimum:
        raise ValueError(f"{len(members)} records cannot give {num_sites} sites {minimum} each")
    for site in range(num_sites):
        while sum(site_of[i] == site for i in members) < minimum:
            load = Counter(site_of[i] for i in members)
            donor = max((s for s in range(num_sites) if s != site), key=lambda s: (load[s], -s))
            donated = [i for i in members if site_of[i] == donor]
            common = Counter(str(labels[i]) for i in donated).most_common(1)[0][0]
            moved = max(i for i in donated if str(labels[i]) == common)
            site_of[moved] = site



def _check_num_sites(num_sites: int) -> None:
    if int(num_sites) != num_sites or num_sites < 1:
        raise ValueError(f"num_sites must be a positive integer, got {num_sites}")
