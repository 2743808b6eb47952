"""Who a site's patients are: how many per disease and split, their ids, and their written labels.

Label noise models misdiagnosis in the records a site trains on: a fraction of
train and val patients carry another disease of the set as their diagnosis. Test
labels stay true so that evaluation measures real diagnostic accuracy. The number
of relabelled patients is the rounded fraction of each split, not a coin flip per
patient, so small sites get the configured rate rather than a lucky draw.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from modalities.synthetic.diseases import Disease
from modalities.synthetic.spec import SPLITS, SiteSpec


@dataclass(frozen=True)
class Enrolment:
    id: str
    split: str
    disease: Disease  # the truth
    label: Disease  # what the site's records say


def enrol(site: SiteSpec, diseases: tuple[Disease, ...], rng: np.random.Generator) -> tuple[Enrolment, ...]:
    slots = [(d, split) for d in diseases for split in SPLITS for _ in range(_draw(rng, site.per_disease(split)))]
    order = rng.permutation(len(slots))  # ids must not reveal the disease
    enrolled = [Enrolment(f"{site.name}-P{n + 1:04d}", slots[i][1], slots[i][0], slots[i][0]) for n, i in enumerate(order)]
    return tuple(_relabel(enrolled, diseases, site.label_noise, rng))


def _relabel(
    enrolled: list[Enrolment], diseases: tuple[Disease, ...], rate: float, rng: np.random.Generator
) -> list[Enrolment]:
    result = list(enrolled)
    for split in ("train", "val"):
        members = [i for i, e in enumerate(enrolled) if e.split == split]
        n_wrong = int(round(rate * len(members)))
        for i in sorted(rng.choice(members, size=n_wrong, replace=False).tolist()) if n_wrong else []:
            result[i] = replace(enrolled[i], label=_rival(enrolled[i].disease, diseases, rng))
    return result


def _rival(disease: Disease, diseases: tuple[Disease, ...], rng: np.random.Generator) -> Disease:
    rivals = [d for d in diseases if d.id != disease.id]
    return rivals[int(rng.integers(len(rivals)))]


def _draw(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))
