"""A consortium cut from a phenopacket store: sites are groups of publications.

Within a paper the cases share curation habits (which terms, at which depth), so
a case-level split would measure recognising a paper, not a disease. Here every
publication (PMID) belongs whole to one site and one split:

- diagnoses: the diseases with at least `min_cases` cases reported by at least
  `min_publications` publications (the label space);
- split: per disease about `test_fraction` of its publications are held out for
  test and `val_fraction` for validation, at least one stays in training;
  a publication reporting several diseases is placed once, for all of them;
- sites: publications are dealt to `num_sites` sites, balanced by patients
  within each split, in a seeded order.

Hyper-parameters are tuned with `evaluate_on: val`: the run then reports on the
validation papers (held out like the test papers), never on test patients.

A site's test set is the patients of its held-out papers, so some test patients
have a disease the site never trained on: that is where the federation helps.
"""
from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from modalities.base import DataError, Modality
from modalities.consortium import Consortium
from modalities.dataset import SiteDataset
from modalities.labels import LabelSpace
from modalities.phenopacket_io import PatientRecord, read_cohort
from modalities.site_data import SiteData

SPLITS = ("train", "val", "test")
_PMID_IN_ID = re.compile(r"PMID_?:?(\d+)")


def publication_of(record: PatientRecord) -> str:
    """The PMID that reported a case: from the phenopacket id, else from metaData.externalReferences."""
    match = _PMID_IN_ID.match(record.patient_id)
    if match:
        return f"PMID:{match.group(1)}"
    references = json.loads(record.source.read_text(encoding="utf-8")).get("metaData", {}).get("externalReferences", [])
    for reference in references:
        match = _PMID_IN_ID.match(str(reference.get("id", "")))
        if match:
            return f"PMID:{match.group(1)}"
    raise DataError(record.source, "no publication: the id is not PMID_<n>_... and no PMID in externalReferences", record=record.patient_id, field="metaData.externalReferences")


def eligible_diseases(records: list[PatientRecord], publications: Mapping[str, str], min_cases: int, min_publications: int) -> list[str]:
    cases = Counter(r.label for r in records if r.label)
    papers: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.label:
            papers[r.label].add(publications[r.patient_id])
    return sorted(d for d in cases if cases[d] >= min_cases and len(papers[d]) >= min_publications)


def split_publications(
    papers_of: Mapping[str, list[str]], patients_in: Mapping[str, int], test_fraction: float, val_fraction: float, seed: int
) -> dict[str, str]:
    """PMID -> split. papers_of: disease -> its PMIDs; patients_in: PMID -> number of (kept) patients."""
    rng = random.Random(seed)
    split: dict[str, str] = {}
    for disease in sorted(papers_of):
        papers = sorted(papers_of[disease])
        rng.shuffle(papers)
        n = len(papers)
        n_test = min(max(1, round(test_fraction * n)), n - 1)
        n_val = min(round(val_fraction * n), n - 1 - n_test)
        want = {"test": n_test, "val": n_val}
        have = Counter(split[p] for p in papers if p in split)
        for paper in papers:
            if paper in split:
                continue
            split[paper] = next((s for s in ("test", "val") if have[s] < want[s]), "train")
            have[split[paper]] += 1
    # A paper placed for another disease may have held out a disease's every paper: return its smallest one.
    for disease in sorted(papers_of):
        papers = sorted(papers_of[disease])
        if not any(split[p] == "train" for p in papers):
            split[min(papers, key=lambda p: (patients_in[p], p))] = "train"
    return split


def assign_sites(patients_in: Mapping[str, int], split: Mapping[str, str], num_sites: int, seed: int) -> dict[str, int]:
    """PMID -> site index: within each split, largest papers first (seeded ties), each to the site with fewest patients."""
    rng = random.Random(seed + 1)
    site: dict[str, int] = {}
    for name in SPLITS:
        papers = sorted(p for p in patients_in if split[p] == name)
        rng.shuffle(papers)
        papers.sort(key=lambda p: -patients_in[p])
        load = [0] * num_sites
        for paper in papers:
            target = min(range(num_sites), key=lambda i: (load[i], rng.random()))
            site[paper] = target
            load[target] += patients_in[paper]
    return site


def load_phenopacket_store(cfg: DictConfig, seed: int) -> Consortium:
    """`data.loader` for a phenopacket store: read every phenopacket under `cfg.root`, cut into publication sites."""
    root = Path(cfg.root)
    records = [r for r in read_cohort(root) if r.label]
    publications = {r.patient_id: publication_of(r) for r in records}
    diseases = eligible_diseases(records, publications, int(cfg.min_cases), int(cfg.get("min_publications", 2)))
    if not diseases:
        raise DataError(root, f"no disease has {cfg.min_cases} cases from {cfg.get('min_publications', 2)} publications")
    label_space = LabelSpace(diseases)
    kept = [r for r in records if r.label in label_space]
    patients_in = Counter(publications[r.patient_id] for r in kept)
    papers_of: dict[str, set[str]] = defaultdict(set)
    for r in kept:
        papers_of[r.label].add(publications[r.patient_id])
    split = split_publications(
        {d: sorted(p) for d, p in papers_of.items()}, patients_in, float(cfg.test_fraction), float(cfg.val_fraction), seed
    )
    num_sites = int(cfg.num_sites)
    site_of = assign_sites(patients_in, split, num_sites, seed)

    modality = str(Modality.PHENOTYPES)
    readers = {modality: instantiate(cfg.readers.phenotypes)}
    terms = readers[modality].read_site(root, kept)
    buckets: dict[int, dict[str, list[dict]]] = {i: {s: [] for s in SPLITS} for i in range(num_sites)}
    for r in kept:
        paper = publications[r.patient_id]
        item = {
            "patient_id": r.patient_id,
            "label": label_space.index(r.label),
            "inputs": {modality: terms[r.patient_id]} if terms[r.patient_id].numel() else {},
            "meta": {"sex": r.sex, "age_years": r.age_years, "publication": paper},
        }
        buckets[site_of[paper]][split[paper]].append(item)
    if cfg.get("evaluate_on", "test") == "val":  # tuning: every evaluation sees the held-out validation papers instead
        buckets = {i: {**b, "test": b["val"]} for i, b in buckets.items()}
    names = [f"site_{i}" for i in range(num_sites)]
    sites = [
        SiteData(name=names[i], modalities=(modality,), splits={s: SiteDataset(buckets[i][s], (modality,)) for s in SPLITS})
        for i in range(num_sites)
    ]
    return Consortium(sites, label_space, [modality], readers)
