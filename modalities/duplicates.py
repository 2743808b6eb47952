"""The same content at several sites: counted, and kept off both sides of a split.

A site's own quality report counts repeats within the site. The same patient sent
to two hospitals, or the same variant classified by two labs, is found across the
consortium by a content hash: an identical phenopacket without its ids and
metadata (`modalities.quality.phenopacket_hash`), or a variant key
(`chrom:pos:ref>alt`). Images are compared too, by their decoded pixels
(`modalities.imaging.pixel_key`: the pixel array as the reader decodes it, with
its shape), so one scan sent as a PNG to one site and as a NIfTI to another is
one image; file bytes would tell them apart.

A copy in some site's val or test split whose content is in any site's training
split (the same site included) is removed from evaluation, since the model has
seen it: otherwise it would be scored on its own training rows. Training data is
never changed. The counts go to quality.json under `all_sites.duplicates` (only
when non-zero, as every other count there): the record's content (phenopacket,
variant) at the top, the images' under `images`. Each kind is counted as if it
were the only one, so an evaluation item whose phenopacket and image were both
seen in training is removed once and counted under both.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modalities.dataset import SiteDataset
from modalities.quality import phenopacket_identity
from modalities.site_data import SiteData

EVALUATION_SPLITS = ("val", "test")
IMAGES = "images"
KeyOf = Callable[[str, Mapping[str, Any]], "str | None"]


@dataclass
class _Kind:
    """One kind of content (records, images): where each content hash was found, with which labels, and whether in training."""

    key_of: KeyOf
    keys: dict[tuple[str, str, int], str | None] = field(default_factory=dict)
    where: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    labels: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    in_training: set[str] = field(default_factory=set)
    removed: int = 0

    def add(self, site: str, split: str, i: int, item: Mapping[str, Any]) -> None:
        key = self.keys[site, split, i] = self.key_of(site, item)
        if key is not None:
            self.where[key].add(site)
            self.labels[key].add(item["label"])
            if split == "train":
                self.in_training.add(key)

    def seen_in_training(self, site: str, split: str, i: int) -> bool:
        return self.keys[site, split, i] in self.in_training

    def counts(self) -> dict[str, int]:
        counts = {
            "same_content_at_several_sites": sum(len(s) > 1 for s in self.where.values()),
            "conflicting_labels": sum(len(s) > 1 for s in self.labels.values()),
            "removed_from_evaluation_seen_in_training": self.removed,
        }
        return {k: v for k, v in counts.items() if v}


def separate_duplicates(
    sites: Sequence[SiteData], key_of: KeyOf | None = None, images: KeyOf | None = None
) -> tuple[list[SiteData], dict[str, Any]]:
    """(sites with evaluation copies of training content removed, counts).

    `key_of(site name, item)` is the item's content hash, `images(site name, item)` its
    image's (None: not compared). Counts, per kind: `same_content_at_several_sites`
    (distinct contents held by more than one site), `conflicting_labels` (distinct
    contents carrying more than one label, anywhere) and
    `removed_from_evaluation_seen_in_training` (items taken out of val or test).
    """
    kinds = {name: _Kind(keyer) for name, keyer in (("", key_of), (IMAGES, images)) if keyer is not None}
    for site in sites:
        for split, dataset in site.splits.items():
            for i, item in enumerate(dataset.items):
                for kind in kinds.values():
                    kind.add(site.name, split, i, item)
    out = [_without_seen(site, kinds.values()) for site in sites]
    counts: dict[str, Any] = dict(kinds[""].counts()) if "" in kinds else {}
    if IMAGES in kinds and kinds[IMAGES].counts():
        counts[IMAGES] = kinds[IMAGES].counts()
    return out, counts


def _without_seen(site: SiteData, kinds: Iterable[_Kind]) -> SiteData:
    """The site with its val and test items whose content (of any kind) is in some site's training split taken out."""
    splits = dict(site.splits)
    for split in EVALUATION_SPLITS:
        if split not in splits:
            continue
        dataset, kept = splits[split], []
        for i, item in enumerate(dataset.items):
            seen = [kind for kind in kinds if kind.seen_in_training(site.name, split, i)]
            for kind in seen:
                kind.removed += 1
            if not seen:
                kept.append(item)
        if len(kept) < len(dataset.items):
            splits[split] = SiteDataset(kept, dataset.modalities)
    return SiteData(name=site.name, modalities=site.modalities, splits=splits)


def phenopacket_keys(folder: Path) -> dict[str, str]:
    """Patient id -> content hash for a site's phenopackets (read after `load_site` validated them)."""
    identities = (phenopacket_identity(path) for path in sorted(Path(folder).rglob("*.json")))
    return dict(identity for identity in identities if identity is not None)


def image_keys(modalities: Sequence[str], readers: Mapping[str, Any]) -> dict[str, str]:
    """Patient id -> pixel key of the site just read (the image reader keeps its last site's); {} without images."""
    reader = readers.get("imaging") if "imaging" in modalities else None
    return dict(getattr(reader, "pixel_keys", {}))
