"""`data.shards: N`: the declared sites cut into N sites in all, for federations larger than the data's own.

A benchmark of 10 or 50 sites on a four-hospital cohort needs more sites than the
cohort has. With `data.shards: N` every declared site (in config order) becomes
`N // S` sites, the first `N % S` one more, named `<site>_<j>`; its records are
dealt to them stratified by (split, label) with `partition_iid`, so each shard
keeps its parent's train/test split, normalisation and label mix and holds at
least one record of every non-empty split. The shards are disjoint and together
hold every record of the parent.

The plan (site names) comes from config alone: a shard entry carries
`shard: {of, index, count}`, so a deployed site narrowed to one shard entry loads
its parent with the data config's own loader, cuts it with the same seed and
keeps its shard: the same records as in simulation.

Each shard gets its own quality report (its parent, sizes and labels); the
consortium-wide report the parents' loader made (`all_sites`: duplicates found
across the declared sites and removed from evaluation, repairs, the label space)
is carried over as it is: the cut moves records between sites, never adds or
removes one, so those counts hold for the shards too.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modalities.dataset import SiteDataset
from modalities.partition import partition_iid
from modalities.quality import label_histogram
from modalities.site_data import SiteData

SHARD = "shard"
"""The key of a shard entry: {"of": parent site name, "index": j, "count": k}."""
CONSORTIUM_WIDE = "all_sites"
"""The quality report's consortium-wide entry, which the cut carries over unchanged."""


def shard_entries(entries: Sequence[dict], total: int | None) -> list[dict]:
    """Each unsharded entry as its shards' entries; entries that already are shards (a narrowed config) stay."""
    entries = [dict(e) for e in entries]
    whole = [e for e in entries if SHARD not in e]
    if not total or not whole:
        return entries
    if len(whole) != len(entries):
        raise ValueError("data.sites mixes shard entries and whole sites; data.shards cuts whole sites only")
    if int(total) < len(whole):
        raise ValueError(f"data.shards={total} is fewer than the {len(whole)} declared sites")
    per_site, extra = divmod(int(total), len(whole))
    shards = []
    for i, entry in enumerate(whole):
        count = per_site + (i < extra)
        width = len(str(count - 1))
        shards += [{**entry, "name": f"{entry['name']}_{j:0{width}d}", SHARD: {"of": entry["name"], "index": j, "count": count}}
                   for j in range(count)]
    return shards


def parent_entries(entries: Sequence[dict]) -> list[dict]:
    """The whole sites the shard entries were cut from, in order, as the data config declared them."""
    parents: dict[str, dict] = {}
    for entry in entries:
        of = entry[SHARD]["of"]
        parents.setdefault(of, {k: v for k, v in entry.items() if k != SHARD} | {"name": of})
    return list(parents.values())


def cut_shards(sites: Sequence[SiteData], entries: Sequence[dict], labels: Sequence[str], seed: int,
               min_count: int, parents_quality: Mapping[str, Any] | None = None) -> tuple[list[SiteData], dict[str, dict[str, Any]]]:
    """The shard entries' sites, cut from their loaded parents; each shard's quality aggregates, and the parents' `all_sites`."""
    by_name = {site.name: site for site in sites}
    cut, quality, dealt = [], {}, {}
    for entry in entries:
        shard = entry[SHARD]
        parent = by_name[shard["of"]]
        if parent.name not in dealt:
            dealt[parent.name] = _shard_splits(parent, int(shard["count"]), seed)
        splits = dealt[parent.name][int(shard["index"])]
        cut.append(SiteData(name=str(entry["name"]), modalities=parent.modalities, splits=splits))
        quality[str(entry["name"])] = {"shard_of": parent.name, "n_patients": sum(len(s) for s in splits.values()),
                                       "splits": {name: len(s) for name, s in splits.items()},
                                       "min_count": int(min_count), "labels": label_histogram(splits, labels, min_count)}
    if CONSORTIUM_WIDE in (parents_quality or {}):
        quality[CONSORTIUM_WIDE] = parents_quality[CONSORTIUM_WIDE]
    return cut, quality


def _shard_splits(parent: SiteData, count: int, seed: int) -> list[dict[str, SiteDataset]]:
    rows = [(split, item) for split, dataset in parent.splits.items() for item in dataset.items]
    partition = partition_iid([item["label"] for _, item in rows], count, seed, strata=[split for split, _ in rows])
    return [{split: SiteDataset([item for (s, item), site in zip(rows, partition.site_of) if s == split and site == j],
                                dataset.modalities)
             for split, dataset in parent.splits.items()}
            for j in range(count)]
