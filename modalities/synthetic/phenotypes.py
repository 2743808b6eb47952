"""Which HPO terms a patient's record shows: observed, excluded, and how specific.

Real records are incomplete and imprecise: a clinician notes a handful of the
disease's features (the frequent ones more often), sometimes a less specific
parent term ("Seizure" for "Focal impaired awareness seizure"), findings that
belong to nothing the patient has, and a few explicitly absent features that would
point to a rival diagnosis. A model that only memorises annotation profiles
should not do well here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modalities.annotations import Annotations
from modalities.hpo import PHENOTYPIC_ABNORMALITY, HpoIndex
from modalities.synthetic.diseases import Disease, primary_ids, under_root

NOISE_POOL_SIZE = 400  # the most often annotated terms: common findings any patient may have


@dataclass(frozen=True)
class TermSpace:
    """The shared vocabulary the sampler draws from, built once per consortium."""

    index: HpoIndex
    position: dict[str, int]
    below_phenotypic: np.ndarray  # mask: strictly below 'Phenotypic abnormality'
    noise_pool: tuple[str, ...]
    closures: dict[str, frozenset[str]]  # disease id -> its terms and all their ancestors

    def ancestors(self, term: str) -> list[str]:
        return [self.index.term_ids[i] for i in self.index.ancestors(self.position[term])]

    def closure(self, terms: tuple[str, ...] | list[str]) -> frozenset[str]:
        return frozenset(a for t in terms for a in self.ancestors(t))


@dataclass(frozen=True)
class Phenotypes:
    observed: tuple[str, ...]
    excluded: tuple[str, ...]


def build_term_space(index: HpoIndex, annotations: Annotations, diseases: tuple[Disease, ...]) -> TermSpace:
    below = under_root(index, PHENOTYPIC_ABNORMALITY)
    below[index.index_of(PHENOTYPIC_ABNORMALITY)] = False
    space = TermSpace(index, index.position, below, _noise_pool(index, annotations, below), {})
    space.closures.update({d.id: space.closure(d.terms) for d in diseases})
    return space


def sample_phenotypes(
    disease: Disease,
    others: tuple[Disease, ...],
    space: TermSpace,
    rng: np.random.Generator,
    completeness: float,
    counts: dict[str, tuple[int, int]],
    generalise_rate: float,
) -> Phenotypes:
    """``counts`` holds the [lo, hi] ranges 'observed_terms', 'noise_terms' and 'excluded_terms'."""
    chosen = _disease_terms(disease, rng, completeness, counts["observed_terms"])
    observed = [_generalise(t, space, rng) if rng.random() < generalise_rate else t for t in chosen]
    observed += _noise_terms(disease, space, rng, _draw(rng, counts["noise_terms"]))
    observed = list(dict.fromkeys(observed))
    excluded = _excluded_terms(disease, others, observed, space, rng, _draw(rng, counts["excluded_terms"]))
    return Phenotypes(tuple(observed), tuple(excluded))


def _disease_terms(disease: Disease, rng: np.random.Generator, completeness: float, bounds: tuple[int, int]) -> list[str]:
    """Each term kept with its frequency x completeness, then topped up or cut to the [lo, hi] bounds."""
    p = np.asarray(disease.frequencies) * completeness
    kept = rng.random(len(p)) < p
    lo, hi = min(bounds[0], len(p)), bounds[1]
    if kept.sum() < lo:
        missing = np.flatnonzero(~kept)
        weights = p[missing] + 1e-3
        extra = rng.choice(missing, size=lo - kept.sum(), replace=False, p=weights / weights.sum())
        kept[extra] = True
    chosen = np.flatnonzero(kept)
    if len(chosen) > hi:
        chosen = np.sort(rng.choice(chosen, size=hi, replace=False))
    return [disease.terms[i] for i in chosen]


def _generalise(term: str, space: TermSpace, rng: np.random.Generator) -> str:
    """A random proper ancestor still below 'Phenotypic abnormality'; the term itself if there is none."""
    own = space.position[term]
    candidates = [i for i in space.index.ancestors(own) if i != own and space.below_phenotypic[i]]
    return space.index.term_ids[int(rng.choice(candidates))] if candidates else term


def _noise_terms(disease: Disease, space: TermSpace, rng: np.random.Generator, n: int) -> list[str]:
    closure = space.closures[disease.id]
    pool = [t for t in space.noise_pool if t not in closure]
    return [str(t) for t in rng.choice(pool, size=min(n, len(pool)), replace=False)]


def _excluded_terms(
    disease: Disease, others: tuple[Disease, ...], observed: list[str], space: TermSpace, rng: np.random.Generator, n: int
) -> list[str]:
    """Terms of rival diseases that this patient's disease does not have and its record does not imply."""
    blocked = space.closures[disease.id] | space.closure(observed)
    pool = sorted({t for other in others for t in other.terms} - blocked)
    return sorted(str(t) for t in rng.choice(pool, size=min(n, len(pool)), replace=False))


def _noise_pool(index: HpoIndex, annotations: Annotations, below: np.ndarray) -> tuple[str, ...]:
    counts = annotations.phenotypes.drop_duplicates(["database_id", "hpo_id"])["hpo_id"].value_counts()
    counts = counts.sort_index().sort_values(ascending=False, kind="stable")  # ties by id, not by hash order
    primary = primary_ids(index, counts.index)
    position = index.position
    common = [primary[t] for t in counts.index if t in primary and below[position[primary[t]]]]
    return tuple(sorted(dict.fromkeys(common[:NOISE_POOL_SIZE])))


def _draw(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))
