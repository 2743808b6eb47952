"""Open differential diagnosis on a phenopacket store: two training-free rankers, local-only, federated, pooled.

Approaches, all scored over the same candidates (every annotated disease + labels):
- `resnik`: Resnik best-match similarity to the annotations (models/knowledge.py), phenotype only;
- `likelihood`: likelihood ratios of observed and excluded terms (and, with variants,
  the genotype) against public knowledge alone; the trained approaches start from it;
- `local`: each site alone: its own case profiles, the scorer trained on its own cases;
- `federated`: case profiles from the counts every site shares (k-suppressed, or by
  secure aggregation), the scorer trained by FedAvg;
- `pooled`: everyone's cases in one place (what privacy rules forbid): the reference.
Every approach is judged on each site's own test patients (held-out publications).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from federation.diagnosis.case_profiles import CaseCounts, count_cases, gene_indicator, share
from federation.diagnosis.cohort import Cohort, Patients, cohort_from
from federation.diagnosis.evidence import Evidence, ProfileSettings, PublicKnowledge, evidence_for, features_for
from federation.diagnosis.metrics import patient_hits, ranks
from federation.diagnosis.scorer import EvidenceTensors, TrainSettings, score, train_alone, train_federated
from modalities.consortium import load_consortium
from models.genotype_likelihood import GenotypeSettings
from models.knowledge import KnowledgeRanker
from models.phenotype_likelihood import LikelihoodSettings, signed_term_sets

log = logging.getLogger(__name__)

APPROACHES = ("resnik", "likelihood", "local", "federated", "pooled")


@dataclass
class SeedResult:
    """Per approach, per site: each test patient's metric values (metrics.patient_hits)."""

    hits: dict[str, dict[str, dict[str, np.ndarray]]]
    n_train: dict[str, int]
    facts: dict
    quality: dict
    model: dict[str, torch.Tensor] | None = None  # the federated scorer's weights
    shared: CaseCounts | None = None              # the counts the coordinator received
    labels: tuple[str, ...] = ()


def settings_from(cfg: DictConfig) -> tuple[LikelihoodSettings, GenotypeSettings, ProfileSettings, TrainSettings]:
    plain = lambda node: OmegaConf.to_container(node, resolve=True) if node is not None else {}  # noqa: E731
    return (
        LikelihoodSettings(**plain(cfg.likelihood)),
        GenotypeSettings(**plain(cfg.genotype)),
        ProfileSettings(**plain(cfg.profiles)),
        TrainSettings(**plain(cfg.training)),
    )


def check_settings(cfg: DictConfig) -> None:
    """Every constant in range before any data is read."""
    likelihood, genotype, profiles, training = settings_from(cfg)
    checks = {
        "likelihood.off_match": 0 < likelihood.off_match <= 1,
        "likelihood.floor": 0 < likelihood.floor <= 1,
        "likelihood.max_excluded": 0 <= likelihood.max_excluded < 1,
        "likelihood.empty_frequency": 0 < likelihood.empty_frequency <= 1,
        "genotype.miss": genotype.miss > 0,
        "genotype.hit_ratio": genotype.hit_ratio >= 0,
        "profiles.prior_cases": profiles.prior_cases >= 0,
        "profiles.unannotated_prior": profiles.unannotated_prior > 0,
        "profiles.min_count": profiles.min_count >= 1,
        "training.rounds": training.rounds >= 0,
        "training.local_epochs": training.local_epochs >= 1,
        "training.lr": training.lr > 0,
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"out of range: {', '.join(f'{n}={OmegaConf.select(cfg, n)}' for n in bad)}")


def run_seed(cfg: DictConfig, seed: int) -> SeedResult:
    torch.manual_seed(seed)
    cohort = cohort_from(load_consortium(cfg.data, seed=seed))
    likelihood, genotype, profiles, training = settings_from(cfg)
    all_patients = [p for splits in cohort.sites.values() for p in splits.values()]
    public = PublicKnowledge(cohort.labels, signed_term_sets([t for p in all_patients for t in p.terms]), likelihood, genotype, cfg.get("annotation_path"), tuple(cfg.databases))
    quality: Counter = Counter()
    test = cohort.split("test")
    train = cohort.split("train")
    hits: dict[str, dict[str, dict[str, np.ndarray]]] = {a: {} for a in APPROACHES}
    n_terms = public.hpo.size

    hits["resnik"] = _resnik(public, cohort, test, cfg)
    knowledge = evidence_for(public, None, profiles)
    plain = EvidenceTensors.of(knowledge, public.terms)
    for site, patients in test.items():
        features = features_for(public, knowledge, patients, cohort.variant_columns, profiles, leave_out=False, counts=quality)
        hits["likelihood"][site] = _hits(score(_ranker(n_terms), plain, features), features, public)

    per_site = {site: count_cases(patients, len(cohort.labels), public.hpo) for site, patients in train.items()}
    quality["case_genes_outside_vocabulary"] = sum(gene_indicator(p.genes, public.hpo)[1] for p in train.values())
    for i, (site, patients) in enumerate(train.items()):  # local-only: nothing leaves the site
        evidence = evidence_for(public, per_site[site], profiles)
        tables = EvidenceTensors.of(evidence, public.terms)
        model = train_alone(tables, features_for(public, evidence, patients, cohort.variant_columns, profiles, True), training, n_terms, seed + i)
        hits["local"][site] = _evaluate(model, tables, public, evidence, test[site], cohort, profiles)

    shared = share(per_site, profiles.min_count, profiles.secure)
    evidence = evidence_for(public, shared, profiles)
    tables = EvidenceTensors.of(evidence, public.terms)
    site_features = {s: (tables, features_for(public, evidence, p, cohort.variant_columns, profiles, True)) for s, p in train.items()}
    model = train_federated(site_features, training, n_terms, seed)
    for site, patients in test.items():
        hits["federated"][site] = _evaluate(model, tables, public, evidence, patients, cohort, profiles)
    learned = {k: float(v) for k, v in model.state_dict().items() if v.numel() == 1}
    federated_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    pooled_counts = sum(list(per_site.values())[1:], start=list(per_site.values())[0])
    evidence = evidence_for(public, pooled_counts, profiles)
    tables = EvidenceTensors.of(evidence, public.terms)
    everyone = Patients.concat(list(train.values()))
    model = train_alone(tables, features_for(public, evidence, everyone, cohort.variant_columns, profiles, True), training, n_terms, seed)
    for site, patients in test.items():
        hits["pooled"][site] = _evaluate(model, tables, public, evidence, patients, cohort, profiles)

    facts = _facts(cohort, public, shared, per_site, learned)
    quality_report = {**cohort.quality, "diagnosis_fallbacks": dict(quality)}
    return SeedResult(hits, {s: len(p) for s, p in train.items()}, facts, quality_report, federated_state, shared, cohort.labels)


def _ranker(n_terms: int):
    from federation.diagnosis.scorer import DiagnosisScorer

    return DiagnosisScorer(n_terms)  # untrained: the likelihood-ratio ranker itself


def _evaluate(model, tables: EvidenceTensors, public: PublicKnowledge, evidence: Evidence, patients: Patients, cohort: Cohort, profiles: ProfileSettings) -> dict[str, np.ndarray]:
    features = features_for(public, evidence, patients, cohort.variant_columns, profiles, leave_out=False)
    return _hits(score(model, tables, features), features, public)


def _hits(logits: torch.Tensor, features, public: PublicKnowledge) -> dict[str, np.ndarray]:
    scores = logits.numpy()
    closed = scores[:, public.label_columns]
    label_of = {c: i for i, c in enumerate(public.label_columns)}
    closed_truth = np.array([label_of[c] for c in features.truth], dtype=np.int64)
    return patient_hits(ranks(closed, closed_truth) if len(scores) else np.empty(0), ranks(scores, features.truth) if len(scores) else np.empty(0))


def _resnik(public: PublicKnowledge, cohort: Cohort, test: dict[str, Patients], cfg: DictConfig) -> dict[str, dict[str, np.ndarray]]:
    ranker = KnowledgeRanker(public.candidates, cfg.get("annotation_path"), tuple(cfg.databases))
    out = {}
    for site, patients in test.items():
        width = max((len(t) for t in patients.terms), default=1)
        terms = torch.zeros(len(patients), max(width, 1), dtype=torch.long)
        for i, t in enumerate(patients.terms):
            terms[i, : len(t)] = torch.from_numpy(t)
        truth = public.label_columns[patients.labels]
        scores = ranker.scores(terms).numpy()
        label_of = {c: i for i, c in enumerate(public.label_columns)}
        closed_truth = np.array([label_of[c] for c in truth], dtype=np.int64)
        out[site] = patient_hits(ranks(scores[:, public.label_columns], closed_truth), ranks(scores, truth))
    return out


def _facts(cohort: Cohort, public: PublicKnowledge, shared, per_site, learned: dict) -> dict:
    annotated = np.diff(public.label_frequencies.indptr) > 0
    test_labels = np.concatenate([p.labels for p in cohort.split("test").values()])
    return {
        "labels": len(cohort.labels),
        "open_candidates": len(public.candidates),
        "labels_without_annotations": [d for d, a in zip(cohort.labels, annotated) if not a],
        "test_patients": int(len(test_labels)),
        "test_patients_without_annotations": int((~annotated[test_labels]).sum()),
        "labels_with_shared_profile": int((shared.cases > 0).sum()),
        "unannotated_labels_with_shared_profile": int(((shared.cases > 0) & ~annotated).sum()),
        "cases_suppressed_by_k": int(sum(c.cases.sum() for c in per_site.values()) - shared.cases.sum()),
        "federated_weights": learned,
    }
