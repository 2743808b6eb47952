"""Read GA4GH Phenopacket v2 JSON files into `PatientRecord`s.

A phenopacket is the one file every patient has: its `id` is the patient id that
joins all modalities, and it carries the diagnosis (the label), sex, age and the
observed and excluded HPO terms. Files are parsed with the schema's own protobuf
classes (`google.protobuf.json_format`), so an unknown field or a wrong type is
caught by the schema rather than by hand-written checks.

Lab `measurements` (assay, quantity with unit) and the causative variants'
`vcfRecord`s are kept on the record too, for sites whose labs or variants live
in the phenopackets rather than in `labs.csv` or a VCF (see `LabReader(source=
"phenopacket")` and `VariantReader(from_phenopacket=True)`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import phenopackets
from google.protobuf import json_format

from modalities.base import DataError

AGE_FIELD = "subject.timeAtLastEncounter.age.iso8601duration"
_DURATION = re.compile(
    r"^P(?:(?P<Y>\d+(?:\.\d+)?)Y)?(?:(?P<M>\d+(?:\.\d+)?)M)?(?:(?P<W>\d+(?:\.\d+)?)W)?"
    r"(?:(?P<D>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_DAYS_PER_YEAR = 365.25
_IN_YEARS = {
    "Y": 1.0,
    "M": 1.0 / 12.0,
    "W": 7.0 / _DAYS_PER_YEAR,
    "D": 1.0 / _DAYS_PER_YEAR,
    "h": 1.0 / (24 * _DAYS_PER_YEAR),
    "m": 1.0 / (24 * 60 * _DAYS_PER_YEAR),
    "s": 1.0 / (24 * 3600 * _DAYS_PER_YEAR),
}


@dataclass(frozen=True)
class Measurement:
    """One phenopacket measurement; `value`/`unit` are None/"" when it is not a quantity. `field` is its JSON path."""

    assay_id: str
    assay_label: str
    value: float | None
    unit: str
    field: str


@dataclass(frozen=True)
class VcfRecordVariant:
    """One `variationDescriptor` with a `vcfRecord`; `field` is its JSON path, for errors."""

    build: str
    chrom: str
    pos: int
    ref: str
    alt: str
    gene: str
    allelic_state_id: str
    allelic_state_label: str
    field: str


@dataclass(frozen=True)
class PatientRecord:
    """What the readers need from one phenopacket; `source` is the file, for error messages."""

    patient_id: str
    label: str | None
    sex: str
    age_years: float | None
    observed: tuple[str, ...]
    excluded: tuple[str, ...]
    files: tuple[tuple[str, dict[str, str]], ...]
    source: Path
    # (term id, excluded) in file order, so errors can name `phenotypicFeatures[i]`.
    features: tuple[tuple[str, bool], ...] = field(default=(), compare=False)
    measurements: tuple[Measurement, ...] = field(default=(), compare=False)
    variants: tuple[VcfRecordVariant, ...] = field(default=(), compare=False)


def parse_iso8601_age(text: str) -> float:
    """Years in an ISO 8601 duration such as P34Y, P3Y6M, P10M, P2W or P5D."""
    match = _DURATION.match(text.strip())
    if not match or text.strip() in ("P", "PT") or not any(match.groupdict().values()):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    return sum(float(v) * _IN_YEARS[k] for k, v in match.groupdict().items() if v)


def read_phenopacket(path: str | Path) -> PatientRecord:
    """Parse one phenopacket; any problem is a DataError naming the file and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err})") from err
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(path, f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
    packet = phenopackets.Phenopacket()
    try:
        json_format.Parse(text, packet)
    except json_format.ParseError as err:
        raise DataError(path, f"not a valid Phenopacket v2: {err}", field=_field_from_parse_error(str(err))) from err
    if not packet.id:
        raise DataError(path, "the phenopacket has no id (the patient id)", field="id")
    return PatientRecord(
        patient_id=packet.id,
        label=_label(packet),
        sex=phenopackets.Sex.Name(packet.subject.sex),
        age_years=_age_years(packet, path),
        observed=tuple(f.type.id for f in packet.phenotypic_features if not f.excluded),
        excluded=tuple(f.type.id for f in packet.phenotypic_features if f.excluded),
        files=tuple((f.uri, dict(f.file_attributes)) for f in packet.files),
        source=path,
        features=tuple((f.type.id, f.excluded) for f in packet.phenotypic_features),
        measurements=_measurements(packet),
        variants=_vcf_records(packet),
    )


def read_cohort(folder: str | Path) -> list[PatientRecord]:
    """Every `*.json` under `folder` (recursively, sorted by path); two files with one id is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "phenopacket folder not found")
    records: list[PatientRecord] = []
    seen: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.json")):
        record = read_phenopacket(path)
        if record.patient_id in seen:
            raise DataError(
                path,
                f"duplicate patient id {record.patient_id!r}: also in {seen[record.patient_id]}",
                record=record.patient_id,
                field="id",
            )
        seen[record.patient_id] = path
        records.append(record)
    return records


def _measurements(packet: phenopackets.Phenopacket) -> tuple[Measurement, ...]:
    out = []
    for i, m in enumerate(packet.measurements):
        quantity = m.value.quantity if m.WhichOneof("measurement_value") == "value" and m.value.HasField("quantity") else None
        unit = ""
        if quantity is not None:
            unit = quantity.unit.label or quantity.unit.id.removeprefix("UCUM:")
        out.append(
            Measurement(
                assay_id=m.assay.id,
                assay_label=m.assay.label,
                value=float(quantity.value) if quantity is not None else None,
                unit=unit,
                field=f"measurements[{i}]",
            )
        )
    return tuple(out)


def _vcf_records(packet: phenopackets.Phenopacket) -> tuple[VcfRecordVariant, ...]:
    out = []
    for i, interpretation in enumerate(packet.interpretations):
        for j, genomic in enumerate(interpretation.diagnosis.genomic_interpretations):
            descriptor = genomic.variant_interpretation.variation_descriptor
            if not descriptor.HasField("vcf_record"):
                continue
            vcf = descriptor.vcf_record
            out.append(
                VcfRecordVariant(
                    build=vcf.genome_assembly,
                    chrom=vcf.chrom,
                    pos=int(vcf.pos),
                    ref=vcf.ref,
                    alt=vcf.alt,
                    gene=descriptor.gene_context.symbol,
                    allelic_state_id=descriptor.allelic_state.id,
                    allelic_state_label=descriptor.allelic_state.label,
                    field=f"interpretations[{i}].diagnosis.genomicInterpretations[{j}]"
                    ".variantInterpretation.variationDescriptor",
                )
            )
    return tuple(out)


def _label(packet: phenopackets.Phenopacket) -> str | None:
    for interpretation in packet.interpretations[:1]:
        if interpretation.diagnosis.disease.id:
            return interpretation.diagnosis.disease.id
    for disease in packet.diseases:
        if disease.term.id and not disease.excluded:
            return disease.term.id
    return None


def _age_years(packet: phenopackets.Phenopacket, path: Path) -> float | None:
    duration = packet.subject.time_at_last_encounter.age.iso8601duration
    if not duration:
        return None
    try:
        return parse_iso8601_age(duration)
    except ValueError as err:
        raise DataError(path, str(err), record=packet.id, field=AGE_FIELD) from err


def _field_from_parse_error(message: str) -> str | None:
    """The JSON path of the offending field in a protobuf ParseError message, e.g. `subject.sex`."""
    unknown = re.search(r'has no field named "([^"]+)" at "([^"]+)"', message)
    if unknown:
        return _strip_root(f"{unknown.group(2)}.{unknown.group(1)}")
    located = re.search(r"\bat (Phenopacket[\w.\[\]]*?)\.*(?:\s|$)", message)
    if located and located.group(1) != "Phenopacket":
        return _strip_root(located.group(1))
    chain = re.findall(r"Failed to parse (\w+) field", message)
    return ".".join(chain) or None


def _strip_root(dotted: str) -> str:
    return dotted.split(".", 1)[1] if "." in dotted else dotted
