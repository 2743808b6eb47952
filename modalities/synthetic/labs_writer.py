"""Lab values per patient, written in each site's own units.

Values are drawn in the consortium's canonical units around the reference interval
from conf/analytes; each disease raises one or two analytes by a few interval widths
(as a urea-cycle defect raises ammonia), in most but not all of its patients. A site
then writes every value in its own unit system (US conventional or SI), converted
with pint using the analyte's molar mass, and leaves out about a tenth of the values,
as real lab panels are incomplete.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pint

NORMAL_SPREAD = 0.3  # sd of a healthy value, in reference-interval widths
SHIFT_PENETRANCE = 0.8  # fraction of a disease's patients whose labs show its shift
SIGNIFICANT_DIGITS = 4


def disease_shifts(
    analytes: Mapping[str, Mapping[str, Any]], rng: np.random.Generator, widths: tuple[float, float]
) -> dict[str, float]:
    """1-2 analytes the disease raises, and by how many reference-interval widths."""
    names = sorted(analytes)
    chosen = rng.choice(len(names), size=min(int(rng.integers(1, 3)), len(names)), replace=False)
    return {names[i]: round(float(rng.uniform(*widths)), 3) for i in sorted(chosen.tolist())}


def patient_labs(
    analytes: Mapping[str, Mapping[str, Any]], shifts: Mapping[str, float], missing_rate: float, rng: np.random.Generator
) -> dict[str, float]:
    """Canonical-unit values for the analytes that were measured."""
    shows_shift = rng.random() < SHIFT_PENETRANCE
    values = {}
    for name in sorted(analytes):
        low, high = float(analytes[name]["low"]), float(analytes[name]["high"])
        z = rng.normal(0.0, NORMAL_SPREAD) + (shifts.get(name, 0.0) * rng.uniform(0.6, 1.4) if shows_shift else 0.0)
        value = max((low + high) / 2 + z * (high - low), 0.2 * low)
        if rng.random() >= missing_rate:
            values[name] = value
    return values


def write_labs(
    path: Path,
    values: Mapping[str, Mapping[str, float]],
    analytes: Mapping[str, Mapping[str, Any]],
    site_units: Mapping[str, str],
) -> None:
    """``values`` maps patient id -> analyte -> canonical value; ``site_units`` the unit the site writes each analyte in."""
    rows = []
    for patient_id in sorted(values):
        for name, value in values[patient_id].items():
            unit = site_units.get(name, analytes[name]["unit"])
            factor = conversion_factor(analytes[name]["unit"], unit, analytes[name].get("molar_mass"))
            rows.append((patient_id, name, _round(value * factor), unit))
    table = pd.DataFrame(rows, columns=["patient_id", "analyte", "value", "unit"])
    table.to_csv(path, index=False)


@lru_cache(maxsize=256)
def conversion_factor(source: str, target: str, molar_mass: str | None = None) -> float:
    """Multiplier from ``source`` to ``target`` units; the 'chemistry' context bridges mass and substance."""
    registry = _registry()
    one = registry.Quantity(1.0, source)
    if molar_mass is None:
        return float(one.to(target).magnitude)
    return float(one.to(target, "chemistry", mw=registry.Quantity(molar_mass)).magnitude)


@lru_cache(maxsize=1)
def _registry() -> pint.UnitRegistry:
    return pint.UnitRegistry()


def _round(value: float) -> str:
    return np.format_float_positional(value, precision=SIGNIFICANT_DIGITS, unique=False, fractional=False, trim="-")
