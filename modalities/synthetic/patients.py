"""One simulated patient: demographics, recorded phenotypes, ancestry and whether a causal variant is found.

Everything a patient's files say is decided here, from the patient's own stream,
so the writers only render it; the writers draw their own noise from separate
streams and cannot change what another modality says about the patient.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modalities.synthetic.diseases import X_LINKED, Disease
from modalities.synthetic.phenotypes import Phenotypes, TermSpace, sample_phenotypes
from modalities.synthetic.roster import Enrolment
from modalities.synthetic.spec import ANCESTRIES, ConsortiumSpec, SiteSpec

AGE_YEARS = {"paediatric": (0, 17), "adult": (18, 80)}
X_LINKED_MALE_FRACTION = 0.85  # X-linked conditions are seen mostly in boys and men


@dataclass(frozen=True)
class Patient:
    id: str
    split: str
    disease: Disease  # the truth
    label: Disease  # the diagnosis the site's records carry
    sex: str  # phenopacket Sex name: MALE or FEMALE
    age_months: int
    ancestry: str
    phenotypes: Phenotypes
    causative_gene: str | None  # None: the causal variant is not found (diagnostic yield < 1)

    @property
    def iso_age(self) -> str:
        """ISO 8601 duration: months for infants, whole years otherwise."""
        return f"P{self.age_months}M" if self.age_months < 12 else f"P{self.age_months // 12}Y"


def sample_patient(
    enrolment: Enrolment,
    site: SiteSpec,
    spec: ConsortiumSpec,
    diseases: tuple[Disease, ...],
    space: TermSpace,
    rng: np.random.Generator,
) -> Patient:
    disease = enrolment.disease
    others = tuple(d for d in diseases if d.id != disease.id)
    counts = {key: getattr(spec, key) for key in ("observed_terms", "noise_terms", "excluded_terms")}
    return Patient(
        id=enrolment.id,
        split=enrolment.split,
        disease=disease,
        label=enrolment.label,
        sex=_sex(disease, rng),
        age_months=_age_months(site.age_mix, rng),
        ancestry=site.ancestry if site.ancestry != "mixed" else str(rng.choice(ANCESTRIES)),
        phenotypes=sample_phenotypes(
            disease, others, space, rng, site.phenotype_completeness, counts, spec.generalise_rate
        ),
        causative_gene=str(rng.choice(disease.genes)) if rng.random() < site.diagnostic_yield else None,
    )


def _sex(disease: Disease, rng: np.random.Generator) -> str:
    p_male = X_LINKED_MALE_FRACTION if disease.inheritance == X_LINKED else 0.5
    return "MALE" if rng.random() < p_male else "FEMALE"


def _age_months(age_mix: str, rng: np.random.Generator) -> int:
    mix = age_mix if age_mix != "mixed" else ("paediatric" if rng.random() < 0.5 else "adult")
    lo, hi = AGE_YEARS[mix]
    years = int(rng.integers(lo, hi + 1))
    return years * 12 if years else int(rng.integers(1, 12))
