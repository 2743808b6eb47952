"""The consortium config as typed values.

The config arrives as plain dicts (from ``OmegaConf.to_container``). Parsing it into
frozen dataclasses up front means a misspelt key or an unknown modality fails before
anything is written, instead of silently falling back to a default.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from modalities.base import ALL_MODALITIES, Modality

SPLITS = ("train", "val", "test")
AGE_MIXES = ("paediatric", "adult", "mixed")
ANCESTRIES = ("EUR", "AFR", "EAS", "SAS")
LAB_UNITS = ("us", "si")

Range = tuple[int, int]


@dataclass(frozen=True)
class SiteSpec:
    """One simulated hospital: what it holds and how its patients differ from other sites'."""

    name: str
    modalities: tuple[str, ...]
    train_per_disease: Range
    val_per_disease: Range = (1, 1)
    test_per_disease: Range = (2, 2)
    age_mix: str = "mixed"
    ancestry: str = "EUR"  # one of ANCESTRIES, or "mixed": each patient gets one at random
    phenotype_completeness: float = 1.0
    diagnostic_yield: float = 0.85
    image_signal: float = 1.0
    image_dims: int = 2
    lab_units: str = "si"
    label_noise: float = 0.0

    def per_disease(self, split: str) -> Range:
        return getattr(self, f"{split}_per_disease")

    def holds(self, modality: str) -> bool:
        return modality in self.modalities


@dataclass(frozen=True)
class ConsortiumSpec:
    """Everything shared by the sites: the diseases, how patients are drawn, the lab analytes."""

    sites: tuple[SiteSpec, ...]
    analytes: Mapping[str, Mapping[str, Any]]
    lab_unit_systems: Mapping[str, Mapping[str, str]]
    n_diseases: int = 20
    min_terms: int = 8
    root_term: str = "HP:0000707"
    min_root_fraction: float = 0.5
    observed_terms: Range = (3, 12)
    noise_terms: Range = (1, 2)
    excluded_terms: Range = (0, 3)
    generalise_rate: float = 0.3
    background_variants: Range = (30, 60)
    rare_benign_variants: Range = (2, 5)
    score_missing_rate: float = 0.1
    lab_missing_rate: float = 0.1
    lab_shift_widths: tuple[float, float] = (2.0, 4.0)
    image_size_2d: int = 32
    image_size_3d: int = 16
    image_noise: float = 0.35


def parse_consortium(config: Mapping[str, Any]) -> ConsortiumSpec:
    """Typed spec from the consortium config; ``site_defaults`` fills keys a site leaves out."""
    config = dict(config)
    site_defaults = dict(config.pop("site_defaults", None) or {})
    sites = tuple(_parse_site({**site_defaults, **body}) for body in config.pop("sites", None) or [])
    if not sites:
        raise ValueError("consortium config: 'sites' is empty")
    names = [site.name for site in sites]
    if len(set(names)) != len(names):
        raise ValueError(f"consortium config: site names must be unique, got {names}")
    config["analytes"] = _load_analytes(config.get("analytes"))
    config.setdefault("lab_unit_systems", {})
    spec = ConsortiumSpec(sites=sites, **_known(ConsortiumSpec, config, "consortium config"))
    _check_consortium(spec)
    return spec


def _parse_site(body: dict[str, Any]) -> SiteSpec:
    name = str(body.pop("name", ""))
    where = f"site {name!r}"
    if not name:
        raise ValueError("consortium config: every site needs a 'name'")
    for split in SPLITS:
        key = f"{split}_per_disease"
        if key in body:
            body[key] = _as_range(body[key], f"{where}: {key}")
    if "modalities" not in body or "train_per_disease" not in body:
        raise ValueError(f"{where}: 'modalities' and 'train_per_disease' are required")
    body["modalities"] = tuple(body["modalities"])
    site = SiteSpec(name=name, **_known(SiteSpec, body, where))
    _check_site(site)
    return site


def _known(cls: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    allowed = {f.name for f in fields(cls)} - {"name", "sites"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    # Lists from YAML become tuples so the frozen specs stay hashable and compare equal.
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}


def _as_range(value: Any, where: str) -> Range:
    lo, hi = (value, value) if isinstance(value, int) else tuple(value)
    if not 0 <= lo <= hi:
        raise ValueError(f"{where}: expected a count or [lo, hi] with 0 <= lo <= hi, got {value!r}")
    return int(lo), int(hi)


def _check_site(site: SiteSpec) -> None:
    where = f"site {site.name!r}"
    unknown = sorted(set(site.modalities) - set(ALL_MODALITIES))
    if unknown:
        raise ValueError(f"{where}: unknown modalities {unknown}; known: {list(ALL_MODALITIES)}")
    if Modality.PHENOTYPES not in site.modalities:
        raise ValueError(f"{where}: every site needs 'phenotypes' (a patient exists when it has a phenopacket)")
    if site.age_mix not in AGE_MIXES:
        raise ValueError(f"{where}: age_mix must be one of {AGE_MIXES}")
    if site.ancestry not in (*ANCESTRIES, "mixed"):
        raise ValueError(f"{where}: ancestry must be one of {ANCESTRIES} or 'mixed'")
    if site.lab_units not in LAB_UNITS:
        raise ValueError(f"{where}: lab_units must be one of {LAB_UNITS}")
    if site.image_dims not in (2, 3):
        raise ValueError(f"{where}: image_dims must be 2 or 3")
    for key in ("phenotype_completeness", "diagnostic_yield", "label_noise"):
        if not 0.0 <= getattr(site, key) <= 1.0:
            raise ValueError(f"{where}: {key} must lie in [0, 1]")


def _check_consortium(spec: ConsortiumSpec) -> None:
    if spec.n_diseases < 2:
        raise ValueError("consortium config: n_diseases must be at least 2 (label noise needs another disease)")
    if any(site.holds(Modality.LABS) for site in spec.sites) and not spec.analytes:
        raise ValueError("consortium config: a site holds labs but 'analytes' is empty")
    for site in spec.sites:
        if site.holds(Modality.LABS) and spec.lab_unit_systems and site.lab_units not in spec.lab_unit_systems:
            raise ValueError(f"site {site.name!r}: lab_units {site.lab_units!r} is not in lab_unit_systems")
    names = [site.name for site in spec.sites]
    if any("/" in name or name.startswith(".") for name in names):
        raise ValueError(f"consortium config: site names must be plain folder names, got {names}")


def _load_analytes(value: Any) -> dict[str, dict[str, Any]]:
    """The analytes mapping itself, or a path to a YAML file holding it (e.g. conf/analytes/default.yaml)."""
    if value is None:
        return {}
    if isinstance(value, (str, Path)):
        from omegaconf import OmegaConf

        value = OmegaConf.to_container(OmegaConf.load(value), resolve=True)
    return {str(name): dict(body) for name, body in value.items()}
