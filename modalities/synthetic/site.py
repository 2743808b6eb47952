"""Writes one site's folder: a phenopacket per patient, the modalities the site holds, and its split.

Each patient's stream is named by the patient id and split per modality, so the
files of one modality do not change when a site gains or loses another.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from numpy.random import SeedSequence

from modalities.base import Modality
from modalities.synthetic.image_writer import patient_image, write_image
from modalities.synthetic.labs_writer import patient_labs, write_labs
from modalities.synthetic.notes_writer import write_note
from modalities.synthetic.patients import Patient, sample_patient
from modalities.synthetic.phenopacket_writer import write_phenopacket
from modalities.synthetic.roster import Enrolment, enrol
from modalities.synthetic.seeds import child, generator
from modalities.synthetic.spec import SiteSpec
from modalities.synthetic.variants import sample_variants
from modalities.synthetic.vcf_writer import write_vcf
from modalities.synthetic.world import World


def write_site(folder: Path, site: SiteSpec, world: World, seq: SeedSequence) -> list[Patient]:
    """Writes the folder and returns its patients (with their true diseases, for the truth table)."""
    roster = enrol(site, world.diseases, generator(seq, "roster"))
    patients = [_patient(e, site, world, child(seq, "patient", e.id)) for e in roster]
    labs = {}
    for patient in patients:
        streams = child(seq, "patient", patient.id)
        _write_files(folder, patient, site, world, streams)
        if site.holds(Modality.LABS):
            labs[patient.id] = patient_labs(
                world.spec.analytes, world.lab_shifts[patient.disease.id], world.spec.lab_missing_rate,
                generator(streams, Modality.LABS),
            )  # fmt: skip
    if site.holds(Modality.LABS):
        units = world.spec.lab_unit_systems.get(site.lab_units, {})
        write_labs(folder / "labs.csv", labs, world.spec.analytes, units)
    splits = pd.DataFrame({"patient_id": [p.id for p in patients], "split": [p.split for p in patients]})
    splits.sort_values("patient_id").to_csv(folder / "split.csv", index=False)
    return patients


def _patient(enrolment: Enrolment, site: SiteSpec, world: World, streams: SeedSequence) -> Patient:
    rng = generator(streams, "clinical")
    return sample_patient(enrolment, site, world.spec, world.diseases, world.space, rng)


def _write_files(folder: Path, patient: Patient, site: SiteSpec, world: World, streams: SeedSequence) -> None:
    spec, pid = world.spec, patient.id
    vcf_uri = f"vcf/{pid}.vcf" if site.holds(Modality.VARIANTS) else None
    write_phenopacket(folder / "phenopackets" / f"{pid}.json", patient, world.space, world.versions, vcf_uri)
    if site.holds(Modality.VARIANTS):
        counts = {"background_variants": spec.background_variants, "rare_benign_variants": spec.rare_benign_variants}
        calls = sample_variants(
            world.genome, patient.ancestry, patient.disease, patient.causative_gene, counts,
            spec.score_missing_rate, generator(streams, Modality.VARIANTS),
        )  # fmt: skip
        write_vcf(folder / vcf_uri, pid, calls)
    if site.holds(Modality.NOTES):
        write_note(folder / "notes" / f"{pid}.txt", patient, world.space, generator(streams, Modality.NOTES))
    if site.holds(Modality.IMAGING):
        pattern = world.patterns[(patient.disease.id, site.image_dims)]
        image = patient_image(pattern, site.image_signal, spec.image_noise, generator(streams, Modality.IMAGING))
        write_image(folder / "images", pid, image)
