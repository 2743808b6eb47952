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

Two things a user means one way are repaired and counted in the record's
`repairs` (and by `read_cohort` in its `stats`, reported under `phenopackets` in
quality.json): whitespace around the patient id (other files are joined on the
stripped id), and a diagnosis id prefix in another case (`omim:618418` is
`OMIM:618418`, not another class). A patient id that cannot name a file (a path
separator, a control character, `.` or `..`) is refused. Messages name the file,
the patient and the field, never the record's content.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import phenopackets
from google.protobuf import json_format

from modalities.base import DataError, regular_file
from modalities.quality import ReadStats

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
# Diagnosis id prefixes in their canonical case (a CURIE's prefix is matched case-insensitively).
DIAGNOSIS_PREFIXES = ("OMIM", "ORPHA", "MONDO", "DECIPHER")
_CANONICAL_PREFIX = {p.lower(): p for p in DIAGNOSIS_PREFIXES}
_UNSAFE_ID = re.compile(r"[/\\\x00-\x1f\x7f]")
_TYPE_NAMES = {"list", "dict", "str", "int", "float", "bool", "NoneType"}


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
    # (kind, detail) of each repair made while reading, for the site's quality report.
    repairs: tuple[tuple[str, str], ...] = field(default=(), compare=False)


def parse_iso8601_age(text: str) -> float:
    """Years in an ISO 8601 duration such as P34Y, P3Y6M, P10M, P2W or P5D."""
    match = _DURATION.match(text.strip())
    if not match or text.strip() in ("P", "PT") or not any(match.groupdict().values()):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    return sum(float(v) * _IN_YEARS[k] for k, v in match.groupdict().items() if v)


def read_phenopacket(path: str | Path) -> PatientRecord:
    """Parse one phenopacket; any problem is a DataError naming the file and the field."""
    path = regular_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err})") from err
    except OSError as err:
        raise DataError(path, f"cannot read: {err.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(path, f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
    except RecursionError:
        raise DataError(path, "JSON nested too deeply to be a phenopacket") from None
    if not isinstance(data, dict):
        raise DataError(path, f"the top level is a JSON {_json_kind(data)}, expected an object (one Phenopacket)")
    packet = phenopackets.Phenopacket()
    try:
        json_format.Parse(text, packet)
    except json_format.ParseError as err:
        raise DataError(path, f"not a valid Phenopacket v2: {_redact(str(err))}", field=_field_from_parse_error(str(err))) from None
    except RecursionError:
        raise DataError(path, "not a valid Phenopacket v2: nested too deeply") from None
    repairs: list[tuple[str, str]] = []
    patient_id = _patient_id(packet.id, path, repairs)
    label = _label(packet)
    if label is not None:
        label = _canonical_label(label, repairs)
    return PatientRecord(
        patient_id=patient_id,
        label=label,
        sex=phenopackets.Sex.Name(packet.subject.sex),
        age_years=_age_years(packet, path),
        observed=tuple(f.type.id for f in packet.phenotypic_features if not f.excluded),
        excluded=tuple(f.type.id for f in packet.phenotypic_features if f.excluded),
        files=tuple((f.uri, dict(f.file_attributes)) for f in packet.files),
        source=path,
        features=tuple((f.type.id, f.excluded) for f in packet.phenotypic_features),
        measurements=_measurements(packet),
        variants=_vcf_records(packet),
        repairs=tuple(repairs),
    )


def read_cohort(folder: str | Path, stats: ReadStats | None = None) -> list[PatientRecord]:
    """Every `*.json` under `folder` (recursively, sorted by path); two files with one id is an error.

    Each record's repairs are added to `stats` when given (the site's quality report).
    """
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
        if stats is not None:
            for kind, detail in record.repairs:
                stats.add(kind, detail)
    return records


def _patient_id(raw: str, path: Path, repairs: list[tuple[str, str]]) -> str:
    """The id every other file of the patient is named after: stripped (counted), and safe as a file name."""
    patient_id = raw.strip()
    if not patient_id:
        raise DataError(path, "the phenopacket has no id (the patient id)", field="id")
    if _UNSAFE_ID.search(patient_id) or patient_id in (".", ".."):
        raise DataError(path, "the patient id cannot name a file (a path separator, a control character, '.' or '..')", field="id")
    if patient_id != raw:
        repairs.append(("patient_id_whitespace_stripped", "leading or trailing whitespace"))
    return patient_id


def _canonical_label(label: str, repairs: list[tuple[str, str]]) -> str:
    """`omim:618418` -> `OMIM:618418` (and stripped): one disease, one class."""
    prefix, colon, local = label.strip().partition(":")
    canonical = _CANONICAL_PREFIX.get(prefix.strip().lower(), prefix.strip()) if colon else prefix
    fixed = f"{canonical}:{local.strip()}" if colon else label.strip()
    if fixed != label:
        repairs.append(("diagnosis_id_normalised", f"{prefix.strip() or '(blank)'}: -> {canonical}:" if colon else "whitespace"))
    return fixed


def _json_kind(value: object) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _redact(message: str) -> str:
    """A protobuf ParseError without the values it quotes (a sub-record, an enum value, a date): no patient data in errors.

    Field names, type names and the schema's list of available fields stay.
    """
    head, sep, rest = message.partition("\n")
    head = _drop_literals(head)
    head = re.sub(r"'([^']*)'", lambda m: m.group(0) if m.group(1) in _TYPE_NAMES else "<value>", head)
    head = re.sub(r"Invalid enum value \S+ for", "Invalid enum value for", head)
    head = re.sub(r"(Couldn't parse [\w ]+): .*?(?= at Phenopacket|$)", r"\1", head)
    head = re.sub(r"Value \S+ has unexpected type", "Value has unexpected type", head)
    return head + (sep + rest if "Available Fields" in rest else "")


def _drop_literals(text: str) -> str:
    """Every {...} and [...] span (a Python repr of JSON content) as <value>; [0] and [] stay."""
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "{" or (char == "[" and not re.match(r"\[\d*\]", text[i:])):
            close, level, j = "}" if char == "{" else "]", 0, i
            while j < len(text):
                level += (text[j] == char) - (text[j] == close)
                if level == 0:
                    break
                j += 1
            out.append("<value>")
            i = j + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


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
    except ValueError:
        raise DataError(path, "not an ISO 8601 duration (e.g. P3Y6M)", record=packet.id.strip(), field=AGE_FIELD) from None  # the age is not echoed


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
