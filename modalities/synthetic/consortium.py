"""Generates a whole simulated consortium on disk, atomically and only when it is not there yet.

Training runs call this before every job, so an up-to-date consortium (same seed,
same config, same generator version: see ``consortium.json``) is returned at once.
Otherwise everything is written into a hidden sibling folder and renamed into place
at the end: an interrupted run never leaves a half-written consortium that a later
run would mistake for a complete one. A lock file next to the folder keeps
concurrent callers (e.g. one process per site) from generating it twice.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
from numpy.random import SeedSequence

from modalities.base import Modality
from modalities.synthetic.patients import Patient
from modalities.synthetic.seeds import child
from modalities.synthetic.site import write_site
from modalities.synthetic.spec import SPLITS, ConsortiumSpec, SiteSpec, parse_consortium
from modalities.synthetic.world import World, build_world

GENERATOR_VERSION = 1  # bump when the output for a given seed and config changes
MANIFEST = "consortium.json"
TRUTH = "truth.csv"


def generate_consortium(out_dir: str | Path, seed: int, **consortium_cfg: Any) -> Path:
    """Writes the consortium described by ``consortium_cfg`` (a conf/consortium/*.yaml as plain dicts) to ``out_dir``."""
    out = Path(out_dir).absolute()
    digest = config_hash(seed, consortium_cfg)
    if _is_current(out, digest):
        return out
    spec = parse_consortium(consortium_cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        if _is_current(out, digest):  # another process finished while we waited
            return out
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        try:
            _write_consortium(staging, seed, spec, digest)
            os.chmod(staging, 0o755)  # mkdtemp makes it private
            _swap_into_place(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out


def config_hash(seed: int, consortium_cfg: dict[str, Any]) -> str:
    payload = {"seed": int(seed), "config": consortium_cfg, "generator_version": GENERATOR_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _is_current(out: Path, digest: str) -> bool:
    try:
        return json.loads((out / MANIFEST).read_text())["config_hash"] == digest
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _write_consortium(root: Path, seed: int, spec: ConsortiumSpec, digest: str) -> None:
    seq = SeedSequence(seed)
    world = build_world(spec, child(seq, "world"))
    patients = {site.name: write_site(root / site.name, site, world, child(seq, "site", site.name)) for site in spec.sites}
    _truth_table(spec.sites, patients).to_csv(root / TRUTH, index=False)
    manifest = _manifest(seed, digest, world, patients)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _manifest(seed: int, digest: str, world: World, patients: dict[str, list[Patient]]) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "config_hash": digest,
        "hpo_version": world.versions["hp"],
        "truth": TRUTH,
        "diseases": [d.summary() for d in world.diseases],
        "sites": [_site_summary(site, patients[site.name]) for site in world.spec.sites],
    }


def _site_summary(site: SiteSpec, patients: list[Patient]) -> dict[str, Any]:
    counts = Counter(p.split for p in patients)
    return {
        "name": site.name,
        "modalities": list(site.modalities),
        "n_patients": len(patients),
        "counts": {split: counts.get(split, 0) for split in SPLITS},
    }


def _truth_table(sites: tuple[SiteSpec, ...], patients: dict[str, list[Patient]]) -> pd.DataFrame:
    """True disease next to the written label; kept outside the site folders, which models read.

    ``causative_gene`` is empty where no causal variant was written: the patient's
    variant was not found, or the site holds no variants at all.
    """
    with_vcf = {site.name for site in sites if site.holds(Modality.VARIANTS)}
    rows = [
        {
            "patient_id": p.id,
            "site": site,
            "split": p.split,
            "disease_id": p.disease.id,
            "label_id": p.label.id,
            "causative_gene": (p.causative_gene or "") if site in with_vcf else "",
        }
        for site, members in patients.items()
        for p in members
    ]
    return pd.DataFrame(rows).sort_values("patient_id", kind="stable")


def _swap_into_place(staging: Path, out: Path) -> None:
    if not out.exists():
        os.replace(staging, out)
        return
    if not (out / MANIFEST).exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a generated consortium (no {MANIFEST}); refusing to replace it")
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, retired / "consortium")
    os.replace(staging, out)
    shutil.rmtree(retired, ignore_errors=True)


@contextmanager
def _lock(out: Path) -> Iterator[None]:
    with open(out.parent / f".{out.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
