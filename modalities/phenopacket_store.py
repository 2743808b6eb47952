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

Variants (`variants.enabled: true`, off by default) add the `variants` modality to
every site. In these files the causative variant's gene nearly names the disease,
so a patient's own vcfRecords alone would be no test: each patient also gets seeded
background candidates the way an exome's filtered candidate list looks
(`patient_variant_rows`):

- common polymorphisms in random genes (AF 0.01-0.5, MODIFIER/LOW/MODERATE, low scores);
- rare benign-looking variants in random genes (AF < 0.001, LOW/MODIFIER, low scores);
- decoys: rare, damaging-looking variants (HIGH/MODERATE, AF < 1e-4, high CADD/REVEL-like
  scores) in known disease genes (genes_to_phenotype.txt), never the patient's own
  diagnosis genes (the label disease's genes and the patient's vcfRecord genes); a
  fraction of them in genes of the other label diseases. So "rare + damaging" does not
  find the causative row: its gene has to fit the phenotype.

The vcfRecords carry only gene and zygosity (no consequence, AF or scores). Leaving
them unannotated while the background is annotated would let missingness name the
causative row, so the causative rows get consequence, impact, AF and scores drawn from
the very distribution of the decoys, and every row, whatever its kind, has its AF and
each score missing (flagged) with the same probability `missing_rate`, and its
consequence/impact unknown with `consequence_missing_rate`: the causative rows and the
decoys are exchangeable in every column but the gene (zygosity: decoys are homozygous
at the cohort's rate of homozygous causative rows, and form a same-gene pair at its
rate of two-variant patients). Only gene and zygosity of causative rows are real.
Rows are shuffled; background rows are cut first when a patient exceeds `max_variants`.
Everything is drawn from (seed, patient id), so it is the same whatever the site split.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from modalities.base import DataError, Modality
from modalities.consortium import Consortium
from modalities.dataset import SiteDataset
from modalities.labels import LabelSpace
from modalities.phenopacket_io import PatientRecord, read_cohort
from modalities.quality import (
    ReadStats,
    min_count_from,
    phenopacket_duplicates,
    site_quality,
)
from modalities.site_data import SiteData
from modalities.variants import (
    AF_FLOOR,
    ALLELIC_STATES,
    HET,
    HOM_ALT,
    VariantReader,
    consequence_code,
    impact_code,
)

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
    read_stats = ReadStats()  # the phenopackets' own repairs (modalities/phenopacket_io.py); none on valid files
    records = [r for r in read_cohort(root, read_stats) if r.label]
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
    modalities = (modality,)
    variant_rows: dict[str, Tensor] = {}
    if variants_enabled(cfg):
        variant_modality = str(Modality.VARIANTS)
        reader = variant_reader(cfg)
        readers[variant_modality] = reader
        background = background_config(cfg)
        pools = background_pools(kept, label_space.labels, reader, reader.stats)
        for r in kept:
            variant_rows[r.patient_id], _ = patient_variant_rows(r, reader, pools, background, seed)
        modalities = (modality, variant_modality)
    buckets: dict[int, dict[str, list[dict]]] = {i: {s: [] for s in SPLITS} for i in range(num_sites)}
    for r in kept:
        paper = publications[r.patient_id]
        inputs = {modality: terms[r.patient_id]} if terms[r.patient_id].numel() else {}
        if r.patient_id in variant_rows and variant_rows[r.patient_id].shape[0]:
            inputs[str(Modality.VARIANTS)] = variant_rows[r.patient_id]
        item = {
            "patient_id": r.patient_id,
            "label": label_space.index(r.label),
            "inputs": inputs,
            # The reported causative genes: what a site's own diagnosis report says (diagnosis case profiles count them).
            "meta": {"sex": r.sex, "age_years": r.age_years, "publication": paper, "genes": sorted({v.gene for v in r.variants if v.gene})},
        }
        buckets[site_of[paper]][split[paper]].append(item)
    if cfg.get("evaluate_on", "test") == "val":  # tuning: every evaluation sees the held-out validation papers instead
        buckets = {i: {**b, "test": b["val"]} for i, b in buckets.items()}
    names = [f"site_{i}" for i in range(num_sites)]
    sites = [
        SiteData(name=names[i], modalities=modalities, splits={s: SiteDataset(buckets[i][s], modalities) for s in SPLITS})
        for i in range(num_sites)
    ]
    quality = store_quality(sites, {r.patient_id: r.source for r in kept}, readers, label_space.labels, min_count_from(cfg))
    quality["all_sites"]["label_space"] = label_space_counts(records, kept)
    if read_stats:
        quality["all_sites"]["repairs"]["phenopackets"] = read_stats.as_dict()
    return Consortium(sites, label_space, list(modalities), readers, quality)


def store_quality(sites: list[SiteData], sources: dict, readers: dict, labels: list[str], min_count: int) -> dict:
    """Per-site quality reports; the readers ran over the whole store at once, so their repairs are reported once."""
    quality = {}
    for site in sites:
        report = site_quality(Path(), site.splits, site.modalities, readers, labels, min_count)
        report.pop("repairs")
        paths = [sources[item["patient_id"]] for split in site.splits.values() for item in split.items]
        report["duplicates"] = {"phenopackets_same_content": phenopacket_duplicates(paths)}
        quality[site.name] = report
    quality["all_sites"] = {"repairs": {m: r.stats.as_dict() for m, r in readers.items() if isinstance(getattr(r, "stats", None), ReadStats)}}
    return quality


def label_space_counts(records: list[PatientRecord], kept: list[PatientRecord]) -> dict:
    """Cases left out because their diagnosis is not a label (too few cases or publications), counted, not silent."""
    outside = [r for r in records if r not in kept]
    return {"patients_outside_labels": len(outside), "diseases_outside_labels": len({r.label for r in outside})}


# --- variants among background candidates -------------------------------------------------------

BACKGROUND_DEFAULTS: dict = {
    "common": [20, 40],          # common polymorphisms per patient: random genes, AF 0.01-0.5
    "rare_benign": [8, 16],      # rare benign-looking: random genes, AF 1e-5-1e-3, LOW/MODIFIER
    "decoys": [2, 5],            # rare damaging-looking, in known disease genes other than the patient's own
    "decoy_label_gene_fraction": 0.5,  # of the decoys, in genes of the other label diseases
    "missing_rate": 0.3,         # every row's AF and each score: missing (flagged) with this probability
    "consequence_missing_rate": 0.0,  # every row's consequence and impact: unknown with this probability
}
COMMON_AF = (0.01, 0.5)
RARE_BENIGN_AF = (1e-5, 1e-3)
DAMAGING_AF = (1e-6, 9e-5)
LOW_SCORES = {"CADD": (0.0, 12.0), "REVEL": (0.0, 0.3)}
MODERATE_COMMON_SCORES = {"CADD": (10.0, 25.0), "REVEL": (0.05, 0.5)}
DAMAGING_SCORES = {"CADD": (25.0, 35.0), "REVEL": (0.6, 0.95)}
ROW_KINDS = ("causative", "common", "rare_benign", "decoy")


@dataclass(frozen=True)
class BackgroundPools:
    """What background draws need from the cohort and the annotation files (same for every patient)."""

    all_genes: tuple[str, ...]          # the gene vocabulary (HPO index gene symbols)
    disease_genes: tuple[str, ...]      # OMIM disease genes of genes_to_phenotype.txt, in the vocabulary
    label_genes: tuple[str, ...]        # genes of the label diseases, in the vocabulary
    genes_of: Mapping[str, frozenset[str]]  # OMIM disease -> its genes
    hom_rate: float                     # fraction of causative rows that are homozygous/hemizygous
    pair_rate: float                    # fraction of patients with variants that have two or more rows


def variants_enabled(cfg: DictConfig) -> bool:
    return bool((cfg.get("variants") or {}).get("enabled", False))


def background_config(cfg: DictConfig) -> dict:
    given = (cfg.get("variants") or {}).get("background") or {}
    given = OmegaConf.to_container(given, resolve=True) if OmegaConf.is_config(given) else dict(given)
    unknown = set(given) - set(BACKGROUND_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown data.variants.background keys {sorted(unknown)}; known: {sorted(BACKGROUND_DEFAULTS)}")
    out = {**BACKGROUND_DEFAULTS, **given}
    for key in ("missing_rate", "consequence_missing_rate", "decoy_label_gene_fraction"):
        if not 0.0 <= float(out[key]) <= 1.0:
            raise ValueError(f"data.variants.background.{key} must be in [0, 1], got {out[key]}")
    return out


def variant_reader(cfg: DictConfig) -> VariantReader:
    """`data.readers.variants` when configured, else a VariantReader with the default columns."""
    if cfg.get("readers") and cfg.readers.get("variants"):
        return instantiate(cfg.readers.variants)
    return VariantReader(from_phenopacket=True)


def background_pools(records: list[PatientRecord], labels, reader: VariantReader, stats=None) -> BackgroundPools:
    from modalities.annotations import load_annotations
    from modalities.hpo import load_hpo_index

    vocabulary = load_hpo_index(reader.hpo_cache_dir).gene_symbols
    known = set(vocabulary)
    genes = load_annotations().genes
    genes_of: dict[str, set[str]] = defaultdict(set)
    for disease, gene in zip(genes["disease_id"], genes["gene_symbol"]):
        genes_of[disease].add(gene)
    disease_genes = tuple(sorted({g for gs in genes_of.values() for g in gs} & known))
    label_genes = tuple(sorted({g for d in labels for g in genes_of.get(d, ())} & known))
    causative = [v for r in records for v in r.variants[: reader.max_variants]]
    hom = sum(ALLELIC_STATES.get(v.allelic_state_id) == HOM_ALT for v in causative)
    with_variants = [r for r in records if r.variants]
    pairs = sum(len(r.variants) >= 2 for r in with_variants)
    if stats is not None:
        stats.add("causative_gene_not_in_vocabulary", n=sum(v.gene not in known for v in causative))
    return BackgroundPools(
        all_genes=tuple(vocabulary),
        disease_genes=disease_genes,
        label_genes=label_genes,
        genes_of={d: frozenset(g) for d, g in genes_of.items()},
        hom_rate=hom / len(causative) if causative else 0.0,
        pair_rate=pairs / len(with_variants) if with_variants else 0.0,
    )


def own_genes(record: PatientRecord, pools: BackgroundPools) -> frozenset[str]:
    """The patient's diagnosis genes: its disease's genes and the genes of its own vcfRecords."""
    return frozenset(pools.genes_of.get(record.label or "", ())) | {v.gene for v in record.variants if v.gene}


def patient_rng(seed: int, patient_id: str) -> np.random.Generator:
    digest = int.from_bytes(hashlib.sha256(patient_id.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed), digest, 0x7661])  # 0x7661: this stream ("va")


def patient_variant_rows(
    record: PatientRecord, reader: VariantReader, pools: BackgroundPools, background: Mapping, seed: int
) -> tuple[Tensor, list[str]]:
    """[V, F] rows (reader's column layout): the patient's vcfRecords among seeded background candidates.

    Returns the table and each row's kind (one of ROW_KINDS), in the same shuffled order.
    """
    from modalities.consequence_mix import BENIGN_CONSEQUENCES, COMMON_CONSEQUENCES, DAMAGING_CONSEQUENCES

    rng = patient_rng(seed, record.patient_id)
    columns = {name: i for i, name in enumerate(reader.columns)}
    position = reader._gene_position
    own = own_genes(record, pools)
    rows: list[list[float]] = []
    kinds: list[str] = []

    def annotate(row: list[float], table, af_range, scores) -> float:
        csq, impact = _pick(table, rng)
        if rng.random() >= float(background["consequence_missing_rate"]):
            row[columns["consequence"]] = float(consequence_code(csq))
            row[columns["impact"]] = float(impact_code(impact))
        af = _log_uniform(rng, *af_range)
        if rng.random() >= float(background["missing_rate"]):
            row[columns["af_neglog10"]] = -math.log10(max(af, AF_FLOOR)) / 6.0
            row[columns["af_missing"]] = 0.0
        for score in reader.score_fields:
            chosen = scores(impact).get(score.upper(), (0.0, 1.0))
            value = round(float(rng.uniform(*chosen)), 3)
            if rng.random() >= float(background["missing_rate"]):
                row[columns[score]] = value
                row[columns[f"{score}_missing"]] = 0.0
        return af

    def blank(gene: str, zygosity: float) -> list[float]:
        row = [0.0] * reader.n_features
        row[columns["valid"]] = 1.0
        row[columns["gene"]] = float(position[gene] + 1) if gene in position else 0.0
        row[columns["zygosity"]] = zygosity
        row[columns["af_missing"]] = 1.0
        for score in reader.score_fields:
            row[columns[f"{score}_missing"]] = 1.0
        return row

    # The patient's own variants: gene and zygosity from the phenopacket, the rest drawn as for a decoy.
    if record.variants:
        table = reader.read_phenopacket_variants(record)
        for real in table.tolist():
            row = blank("", real[columns["zygosity"]])
            row[columns["gene"]] = real[columns["gene"]]
            annotate(row, DAMAGING_CONSEQUENCES, DAMAGING_AF, lambda impact: DAMAGING_SCORES)
            rows.append(row)
            kinds.append("causative")

    background_rows: list[tuple[list[float], str]] = []
    for _ in range(_draw(rng, background["common"])):
        gene = pools.all_genes[int(rng.integers(len(pools.all_genes)))]
        row = blank(gene, 1.0)
        af = annotate(row, COMMON_CONSEQUENCES, COMMON_AF, lambda impact: MODERATE_COMMON_SCORES if impact == "MODERATE" else LOW_SCORES)
        row[columns["zygosity"]] = HOM_ALT if rng.random() < af / (2 - af) else HET  # Hardy-Weinberg, given a carrier
        background_rows.append((row, "common"))
    for _ in range(_draw(rng, background["rare_benign"])):
        gene = pools.all_genes[int(rng.integers(len(pools.all_genes)))]
        row = blank(gene, HET)
        annotate(row, BENIGN_CONSEQUENCES, RARE_BENIGN_AF, lambda impact: LOW_SCORES)
        background_rows.append((row, "rare_benign"))
    label_pool = tuple(g for g in pools.label_genes if g not in own)
    disease_pool = tuple(g for g in pools.disease_genes if g not in own)
    n_decoys = _draw(rng, background["decoys"]) if disease_pool else 0
    decoys = 0
    while decoys < n_decoys:
        use_label = label_pool and rng.random() < float(background["decoy_label_gene_fraction"])
        pool = label_pool if use_label else disease_pool
        gene = pool[int(rng.integers(len(pool)))]
        # Same-gene pairs (compound-heterozygous-like) at the cohort's rate of two-variant patients.
        pair = decoys + 1 < n_decoys and rng.random() < pools.pair_rate
        for _ in range(2 if pair else 1):
            zygosity = HET if pair else (HOM_ALT if rng.random() < pools.hom_rate else HET)
            row = blank(gene, zygosity)
            annotate(row, DAMAGING_CONSEQUENCES, DAMAGING_AF, lambda impact: DAMAGING_SCORES)
            background_rows.append((row, "decoy"))
            decoys += 1

    room = max(0, reader.max_variants - len(rows))
    if len(background_rows) > room:  # keep decoys and rare rows first, as a rare-first filter would
        priority = {"decoy": 0, "rare_benign": 1, "common": 2}
        order = sorted(range(len(background_rows)), key=lambda i: (priority[background_rows[i][1]], i))
        background_rows = [background_rows[i] for i in sorted(order[:room])]
    rows += [r for r, _ in background_rows]
    kinds += [k for _, k in background_rows]
    order = rng.permutation(len(rows))
    table = torch.tensor([rows[i] for i in order], dtype=torch.float32).reshape(len(rows), reader.n_features)
    return table, [kinds[i] for i in order]


def _pick(table, rng: np.random.Generator) -> tuple[str, str]:
    weights = np.array([w for *_, w in table], dtype=float)
    csq, impact, _ = table[int(rng.choice(len(table), p=weights / weights.sum()))]
    return csq, impact


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(10 ** rng.uniform(math.log10(lo), math.log10(hi)))


def _draw(rng: np.random.Generator, bounds) -> int:
    lo, hi = (int(bounds), int(bounds)) if isinstance(bounds, (int, float)) else (int(bounds[0]), int(bounds[1]))
    return int(rng.integers(lo, hi + 1))
