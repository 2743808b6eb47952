"""The same content at several sites: counted, and kept off both sides of a split.

A site's own quality report counts repeats within the site. The same patient sent
to two hospitals, or the same variant classified by two labs, is found across the
consortium by a content hash: an identical phenopacket without its ids and
metadata (`modalities.quality.phenopacket_hash`), or a variant key
(`chrom:pos:ref>alt`). A copy in some site's val or test split whose content is in
any site's training split (the same site included) is removed from evaluation,
since the model has seen it: otherwise it would be scored on its own training
rows. Training data is never changed. The counts go to quality.json under
`all_sites.duplicates` (only when non-zero, as every other count there).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from modalities.dataset import SiteDataset
from modalities.quality import phenopacket_identity
from modalities.site_data import SiteData

EVALUATION_SPLITS = ("val", "test")
KeyOf = Callable[[str, Mapping[str, Any]], "str | None"]


def separate_duplicates(sites: Sequence[SiteData], key_of: KeyOf) -> tuple[list[SiteData], dict[str, int]]:
    """(sites with evaluation copies of training content removed, counts).

    `key_of(site name, item)` is the item's content hash (None: not compared). Counts:
    `same_content_at_several_sites` (distinct contents held by more than one site),
    `conflicting_labels` (distinct contents carrying more than one label, anywhere) and
    `removed_from_evaluation_seen_in_training` (items taken out of val or test).
    """
    where: dict[str, set[str]] = defaultdict(set)
    label_sets: dict[str, set[int]] = defaultdict(set)
    in_training: set[str] = set()
    keys: dict[tuple[str, str, int], str | None] = {}
    for site in sites:
        for split, dataset in site.splits.items():
            for i, item in enumerate(dataset.items):
                key = keys[site.name, split, i] = key_of(site.name, item)
                if key is None:
                    continue
                where[key].add(site.name)
                label_sets[key].add(item["label"])
                if split == "train":
                    in_training.add(key)
    removed = 0
    out = []
    for site in sites:
        splits = dict(site.splits)
        for split in EVALUATION_SPLITS:
            if split not in splits:
                continue
            dataset = splits[split]
            kept = [item for i, item in enumerate(dataset.items) if keys[site.name, split, i] not in in_training]
            if len(kept) < len(dataset.items):
                removed += len(dataset.items) - len(kept)
                splits[split] = SiteDataset(kept, dataset.modalities)
        out.append(SiteData(name=site.name, modalities=site.modalities, splits=splits))
    counts = {
        "same_content_at_several_sites": sum(len(s) > 1 for s in where.values()),
        "conflicting_labels": sum(len(s) > 1 for s in label_sets.values()),
        "removed_from_evaluation_seen_in_training": removed,
    }
    return out, {k: v for k, v in counts.items() if v}


def phenopacket_keys(folder: Path) -> dict[str, str]:
    """Patient id -> content hash for a site's phenopackets (read after `load_site` validated them)."""
    identities = (phenopacket_identity(path) for path in sorted(Path(folder).rglob("*.json")))
    return dict(identity for identity in identities if identity is not None)
