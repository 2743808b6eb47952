"""Lab values (`labs.csv`, long format) as standardised values plus missing indicators.

Sites report the same analyte in different units (glucose in mg/dL or mmol/L,
enzymes in U/L or ukat/L), so every value is converted with pint to the analyte's
canonical unit from config, using the `chemistry` context and the analyte's molar
mass for mass <-> substance conversions. Values are then standardised with the
reference interval, `(v - mid) / half_width`, which needs no statistics pooled
across sites.

Labs come from `labs.csv` (`source="csv"`) or from the phenopackets' `measurements`
(`source="phenopacket"`), whose assays are matched to analytes by the `assays`
map (assay id or label -> analyte name) or by an assay label equal to the
analyte name. Every unit conversion is counted in `stats` (by analyte and unit).

An analyte's optional `plausible: [min, max]` (canonical unit, inclusive) bounds
what a living patient can have; a value outside (a negative concentration, glucose
of 1e9 mmol/L) is a typo or a wrong unit. It is dropped and counted
(`implausible_values_dropped`, by analyte) with `implausible_values="drop"`, the
default, or refused with "error"; it is never averaged with the patient's real rows.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pint
import torch
import yaml
from torch import Tensor

from modalities.base import DataError, check_option, not_a_number, optional_file
from modalities.phenopacket_io import PatientRecord
from modalities.quality import ReadStats

log = logging.getLogger(__name__)

DEFAULT_ANALYTES_FILE = Path(__file__).resolve().parents[1] / "conf" / "analytes" / "default.yaml"
COLUMNS = ("patient_id", "analyte", "value", "unit")
UNKNOWN_ANALYTE_POLICIES = ("ignore", "error")
IMPLAUSIBLE_POLICIES = ("drop", "error")
SOURCES = ("csv", "phenopacket")


@lru_cache(maxsize=1)
def unit_registry() -> pint.UnitRegistry:
    """One shared registry; 'IU' is added as an alias of pint's enzyme unit U (umol/min), as labs use it."""
    registry = pint.UnitRegistry()
    registry.define("@alias enzyme_unit = IU")
    return registry


@dataclass(frozen=True)
class Analyte:
    name: str
    unit: pint.Unit
    low: float
    high: float
    molar_mass: pint.Quantity | None
    plausible: tuple[float, float] | None = None

    def is_plausible(self, value: float) -> bool:
        return self.plausible is None or self.plausible[0] <= value <= self.plausible[1]

    def standardise(self, value: float) -> float:
        return (value - (self.low + self.high) / 2) / ((self.high - self.low) / 2)


def load_default_analytes() -> dict[str, dict]:
    return yaml.safe_load(DEFAULT_ANALYTES_FILE.read_text())


def parse_analytes(config: Mapping[str, Mapping]) -> list[Analyte]:
    """Analytes from config (name -> {unit, low, high, molar_mass?, plausible?}), in config order."""
    ureg = unit_registry()
    analytes = []
    for name, spec in config.items():
        spec = dict(spec)
        low, high = float(spec["low"]), float(spec["high"])
        if not high > low:
            raise ValueError(f"analyte {name}: reference interval needs high > low, got [{low}, {high}]")
        molar_mass = spec.get("molar_mass")
        if molar_mass is not None:
            molar_mass = ureg.Quantity(molar_mass) if isinstance(molar_mass, str) else ureg.Quantity(molar_mass, "g/mol")
            if molar_mass.dimensionality != ureg.Quantity(1, "g/mol").dimensionality:
                raise ValueError(f"analyte {name}: molar_mass {molar_mass} is not a mass per amount of substance")
        plausible = spec.get("plausible")
        if plausible is not None:
            plausible = tuple(float(b) for b in plausible)
            if len(plausible) != 2 or not plausible[0] <= low < high <= plausible[1]:
                raise ValueError(f"analyte {name}: plausible must be [min, max] around the reference interval [{low}, {high}], got {list(plausible)}")
        analytes.append(Analyte(str(name), ureg.parse_units(str(spec["unit"])), low, high, molar_mass, plausible))
    return analytes


class LabReader:
    """Reads `<site>/<file>`; row n in errors is line n of the file (the header is line 1).

    Rows for analytes not in config are ignored (or an error with `unknown_analytes="error"`);
    analyte names match case-insensitively. Several rows for one patient and analyte are averaged.
    """

    def __init__(
        self,
        file: str = "labs.csv",
        analytes: Mapping[str, Mapping] | None = None,
        unknown_analytes: str = "ignore",
        source: str = "csv",
        assays: Mapping[str, str] | None = None,
        implausible_values: str = "drop",
    ):
        check_option("unknown_analytes", unknown_analytes, UNKNOWN_ANALYTE_POLICIES)
        check_option("source", source, SOURCES)
        self.implausible_values = check_option("implausible_values", implausible_values, IMPLAUSIBLE_POLICIES)
        self.file = file
        self.source = source
        self.analytes = parse_analytes(analytes if analytes is not None else load_default_analytes())
        if not self.analytes:
            raise ValueError("no analytes configured")
        self.unknown_analytes = unknown_analytes
        names = {a.name.lower(): a.name for a in self.analytes}
        self.assays = {str(k).strip().lower(): str(v) for k, v in (assays or {}).items()}
        unmapped = sorted(v for v in self.assays.values() if v.lower() not in names)
        if unmapped:
            raise ValueError(f"assays map to analytes that are not configured: {unmapped}")
        self.stats = ReadStats()

    @property
    def analyte_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.analytes)

    def read_site(self, site_dir: Path, records: list[PatientRecord]) -> dict[str, Tensor]:
        self.stats = ReadStats()
        if self.source == "phenopacket":
            return self._read_measurements(records)
        path = optional_file(Path(site_dir) / self.file)  # a named pipe is refused, not taken for no labs
        if path is None:
            return {}
        table = self._read_table(path)
        known = {r.patient_id for r in records}
        position = {a.name.lower(): i for i, a in enumerate(self.analytes)}
        values: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in self.analytes])
        for offset, (patient_id, analyte, value, unit) in enumerate(table.itertuples(index=False, name=None)):
            row = f"row {offset + 2}"
            patient_id, analyte = patient_id.strip(), analyte.strip()
            if patient_id not in known:
                self.stats.add("rows_without_phenopacket")
                continue
            if analyte.lower() not in position:
                if self.unknown_analytes == "error":
                    raise DataError(path, f"unknown analyte {analyte!r}", record=f"{row} ({patient_id})", field="analyte")
                self.stats.add("unknown_analyte_rows", analyte)
                continue
            i = position[analyte.lower()]
            converted = self._convert(path, f"{row} ({patient_id})", self.analytes[i], value, unit)
            if converted is not None:
                values[patient_id][i].append(converted)
        self._log_counts(path, values)
        return {pid: self._encode(per_analyte) for pid, per_analyte in values.items()}

    def _read_measurements(self, records: list[PatientRecord]) -> dict[str, Tensor]:
        """Quantities in the phenopackets' `measurements`; errors name `measurements[i]` of the file."""
        position = {a.name.lower(): i for i, a in enumerate(self.analytes)}
        out = {}
        for record in records:
            per_analyte: list[list[float]] = [[] for _ in self.analytes]
            for m in record.measurements:
                name = self.assays.get(m.assay_id.lower()) or self.assays.get(m.assay_label.strip().lower()) or m.assay_label
                if name.strip().lower() not in position:
                    if self.unknown_analytes == "error":
                        raise DataError(
                            record.source, f"assay {m.assay_id or m.assay_label!r} maps to no configured analyte",
                            record=record.patient_id, field=f"{m.field}.assay",
                        )
                    self.stats.add("unknown_analyte_rows", m.assay_id or m.assay_label)
                    continue
                if m.value is None:
                    raise DataError(
                        record.source, "measurement value is not a quantity", record=record.patient_id,
                        field=f"{m.field}.value.quantity",
                    )
                i = position[name.strip().lower()]
                where = f"{record.patient_id} {m.field}.value.quantity"
                converted = self._convert(record.source, where, self.analytes[i], str(m.value), m.unit)
                if converted is not None:
                    per_analyte[i].append(converted)
            if any(per_analyte):
                out[record.patient_id] = self._encode(per_analyte)
                self.stats["duplicate_rows_averaged"] += sum(max(0, len(v) - 1) for v in per_analyte)
        return out

    def collate(self, items: list[Tensor]) -> Tensor:
        if not items:
            raise ValueError("cannot collate an empty batch")
        return torch.stack(items)

    def _read_table(self, path: Path) -> pd.DataFrame:
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise DataError(path, f"cannot parse CSV: {err}") from err
        table.columns = [str(c).strip() for c in table.columns]
        for column in COLUMNS:
            if column not in table.columns:
                raise DataError(path, f"missing column {column!r} (expected {', '.join(COLUMNS)})", field=column)
        return table[list(COLUMNS)]

    def _convert(self, path: Path, record: str, analyte: Analyte, value: str, unit: str) -> float | None:
        """The value in the analyte's unit; None when it is implausible and dropped (counted)."""
        try:
            number = float(value)
        except ValueError:
            raise DataError(path, not_a_number(str(value)), record=record, field="value") from None
        if not math.isfinite(number):
            raise DataError(path, "the value is not a finite number (inf or nan)", record=record, field="value")
        if not unit.strip():
            raise DataError(path, f"no unit for {analyte.name}", record=record, field="unit")
        ureg = unit_registry()
        try:
            quantity = ureg.Quantity(number, ureg.parse_units(unit.strip()))
        except Exception as err:  # pint raises several error types (undefined unit, syntax, token errors)
            raise DataError(path, f"unknown unit {unit!r}: {err}", record=record, field="unit") from err
        try:
            if analyte.molar_mass is not None:
                converted = quantity.to(analyte.unit, "chemistry", mw=analyte.molar_mass)
            else:
                converted = quantity.to(analyte.unit)
        except pint.DimensionalityError as err:
            raise DataError(
                path, f"cannot convert {unit!r} to {analyte.unit} for {analyte.name}", record=record, field="unit"
            ) from err
        if quantity.units != analyte.unit:
            self.stats.add("unit_conversions", f"{analyte.name}: {unit.strip()} -> {analyte.unit:~C}")
        number = float(converted.magnitude)
        if analyte.is_plausible(number):
            return number
        low, high = analyte.plausible
        if self.implausible_values == "error":
            raise DataError(path, f"{analyte.name} outside the plausible range [{low}, {high}] {analyte.unit:~C} (conf/analytes)", record=record, field="value")
        self.stats.add("implausible_values_dropped", analyte.name)
        return None

    def _encode(self, per_analyte: list[list[float]]) -> Tensor:
        standardised = [a.standardise(sum(v) / len(v)) if v else 0.0 for a, v in zip(self.analytes, per_analyte)]
        missing = [0.0 if v else 1.0 for v in per_analyte]
        return torch.tensor(standardised + missing, dtype=torch.float32)

    def _log_counts(self, path: Path, values: Mapping[str, list[list[float]]]) -> None:
        self.stats["duplicate_rows_averaged"] = sum(max(0, len(v) - 1) for rows in values.values() for v in rows)
        for key, what in (
            ("rows_without_phenopacket", "rows of patients without a phenopacket"),
            ("unknown_analyte_rows", "rows of analytes not in config"),
            ("duplicate_rows_averaged", "duplicate rows (same patient and analyte) averaged"),
            ("implausible_values_dropped", "values outside their analyte's plausible range dropped"),
        ):
            if self.stats[key]:
                log.warning("%s: %d %s", path, self.stats[key], what)
