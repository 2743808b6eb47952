"""One GA4GH Phenopacket v2 per patient, built with the ``phenopackets`` protobuf classes.

Building the message (rather than writing JSON by hand) means the schema checks
field names and types; ``MessageToJson`` with sorted keys and a fixed creation time
makes the file byte-for-byte reproducible.
"""
from __future__ import annotations

from pathlib import Path

import phenopackets as pp
from google.protobuf.json_format import MessageToJson
from google.protobuf.timestamp_pb2 import Timestamp

from modalities.synthetic.patients import Patient
from modalities.synthetic.phenotypes import TermSpace

CREATED = "2024-01-01T00:00:00Z"  # fixed: a wall-clock time would break byte-determinism
CREATED_BY = "rarefed synthetic consortium generator"
SCHEMA_VERSION = "2.0"


def write_phenopacket(path: Path, patient: Patient, space: TermSpace, versions: dict[str, str], vcf_uri: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    packet = build_phenopacket(patient, space, versions, vcf_uri)
    path.write_text(MessageToJson(packet, sort_keys=True, indent=2) + "\n", encoding="utf-8")


def build_phenopacket(patient: Patient, space: TermSpace, versions: dict[str, str], vcf_uri: str | None) -> pp.Phenopacket:
    """``versions`` holds the 'hp' and 'omim' resource versions; the diagnosis is the site's label, not the truth."""
    diagnosis = pp.OntologyClass(id=patient.label.id, label=patient.label.name)
    packet = pp.Phenopacket(
        id=patient.id,
        subject=pp.Individual(
            id=patient.id,
            sex=pp.Sex.Value(patient.sex),
            time_at_last_encounter=pp.TimeElement(age=pp.Age(iso8601duration=patient.iso_age)),
        ),
        phenotypic_features=[_feature(t, space, False) for t in patient.phenotypes.observed]
        + [_feature(t, space, True) for t in patient.phenotypes.excluded],
        interpretations=[
            pp.Interpretation(
                id=f"{patient.id}-interpretation",
                progress_status=pp.Interpretation.ProgressStatus.SOLVED,
                diagnosis=pp.Diagnosis(disease=diagnosis),
            )
        ],
        diseases=[pp.Disease(term=diagnosis)],
        meta_data=_meta_data(versions),
    )
    if vcf_uri is not None:
        packet.files.append(pp.File(uri=vcf_uri, file_attributes={"fileFormat": "vcf", "genomeAssembly": "GRCh38"}))
    return packet


def _feature(term: str, space: TermSpace, excluded: bool) -> pp.PhenotypicFeature:
    label = space.index.names[space.position[term]]
    return pp.PhenotypicFeature(type=pp.OntologyClass(id=term, label=label), excluded=excluded)


def _meta_data(versions: dict[str, str]) -> pp.MetaData:
    created = Timestamp()
    created.FromJsonString(CREATED)
    return pp.MetaData(
        created=created,
        created_by=CREATED_BY,
        phenopacket_schema_version=SCHEMA_VERSION,
        resources=[
            pp.Resource(
                id="hp",
                name="human phenotype ontology",
                url="http://purl.obolibrary.org/obo/hp.owl",
                version=versions["hp"],
                namespace_prefix="HP",
                iri_prefix="http://purl.obolibrary.org/obo/HP_",
            ),
            pp.Resource(
                id="omim",
                name="Online Mendelian Inheritance in Man",
                url="https://www.omim.org",
                version=versions["omim"],
                namespace_prefix="OMIM",
                iri_prefix="https://www.omim.org/entry/",
            ),
        ],
    )
