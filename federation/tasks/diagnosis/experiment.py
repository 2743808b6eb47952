"""Open differential diagnosis on a phenopacket store: two training-free rankers, local-only, federated, pooled.

Approaches, all scored over the same candidates (every annotated disease + labels):
- `resnik`: Resnik best-match similarity to the annotations (models/knowledge.py), phenotype only;
- `likelihood`: likelihood ratios of observed and excluded terms (and, with variants,
  the genotype) against public knowledge alone; the trained approaches start from it;
- `local`: each site alone: its own case profiles, the scorer trained on its own cases;
- `federated`: case profiles from the counts every site shares (k-suppressed, or by
  secure aggregation), to which each site adds back its own in full, and the scorer
  trained by FedAvg;
- `deployed`: what each site chose between its local-only and the federated scorer (and,
  with `deployment.blend`, the federated one blended with the two rankers, blend.py) on
  its own validation publications (deployment.py);
- `pooled`: everyone's cases in one place (what privacy rules forbid): the reference.
Every approach is judged on each site's own test patients (held-out publications).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from federation.settings import ConfigError
from federation.tasks.diagnosis import blend
from federation.tasks.diagnosis.case_profiles import CaseCounts, count_cases, gene_indicator, share, site_view
from federation.tasks.diagnosis.cohort import Cohort, Patients, cohort_from
from federation.tasks.diagnosis.deployment import BLEND, CANDIDATES, choose_sites, objective
from federation.tasks.diagnosis.evidence import Evidence, ProfileSettings, PublicKnowledge, evidence_for, features_for
from federation.tasks.diagnosis.metrics import patient_hits, ranks
from federation.tasks.diagnosis.scorer import DiagnosisScorer, EvidenceTensors, TrainSettings, score, train_alone, train_federated
from modalities.consortium import load_consortium
from modalities.phenotypes import pad_sequences
from models.genotype_likelihood import GenotypeSettings
from models.phenotype_likelihood import LikelihoodSettings, signed_term_sets

APPROACHES = ("resnik", "likelihood", "local", "federated", "deployed", "pooled")


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
        "training.closed_weight": training.closed_weight >= 0,
    }
    if cfg.get("variant_model") and not (Path(cfg.variant_model) / "variant_encoding.json").is_file():
        raise FileNotFoundError(f"{cfg.variant_model}: variant_model is not an experiment=vus run folder (no variant_encoding.json)")
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise ConfigError(bad[0], OmegaConf.select(cfg, bad[0]), "out of range")


@dataclass
class Context:
    """What every approach of one seed reads: the cohort, the public tables, the settings, the counted fallbacks."""

    cfg: DictConfig
    cohort: Cohort
    public: PublicKnowledge
    profiles: ProfileSettings
    training: TrainSettings
    seed: int
    quality: Counter
    trained: dict = field(default_factory=dict)  # approach -> site -> (scorer, tables, evidence), for the deployed choice
    deployment: dict = field(default_factory=dict)  # site -> the choice, its validation figures and reason

    @property
    def columns(self) -> tuple[str, ...]:
        return self.cohort.variant_columns

    def features(self, evidence: Evidence, patients: Patients, leave_out: bool, count: bool = False):
        """`count`: add the genotype fallbacks to the quality report (once per patient: the public ranker's pass)."""
        return features_for(self.public, evidence, patients, self.columns, self.profiles, leave_out, self.quality if count else None)


def run_seed(cfg: DictConfig, seed: int, approaches: tuple[str, ...] = APPROACHES, cohort: Cohort | None = None, public: PublicKnowledge | None = None) -> SeedResult:
    """Every approach in `approaches` on one seed's split (the data seed sets the split; training is seeded too).

    `cohort` and `public` may be passed in when a search reruns the same data with other settings.
    """
    torch.manual_seed(seed)
    cohort = cohort or load_cohort(cfg, seed)
    likelihood, genotype, profiles, training = settings_from(cfg)
    public = public or public_knowledge(cfg, cohort)
    ctx = Context(cfg, cohort, public, profiles, training, seed, Counter())
    train = cohort.split("train")
    per_site = {site: count_cases(patients, len(cohort.labels), public.hpo) for site, patients in train.items()}
    ctx.quality["case_genes_outside_vocabulary"] = sum(gene_indicator(p.genes, public.hpo)[1] for p in train.values())
    shared = share(per_site, profiles.min_count, profiles.secure)
    runners = {"resnik": _resnik, "likelihood": _likelihood, "local": _local, "federated": _federated, "deployed": _deployed, "pooled": _pooled}
    hits, federated_state = {}, None
    for approach in approaches:
        hits[approach], state = runners[approach](ctx, per_site, shared)
        federated_state = state if approach == "federated" else federated_state
    learned = {k: float(v) for k, v in (federated_state or {}).items() if v.numel() == 1}
    facts = _facts(cohort, public, shared, per_site, learned) | ({"deployment": ctx.deployment} if ctx.deployment else {})
    quality_report = {**cohort.quality, "diagnosis_fallbacks": dict(ctx.quality)}
    return SeedResult(hits, {s: len(p) for s, p in train.items()}, facts, quality_report, federated_state, shared, cohort.labels)


def load_cohort(cfg: DictConfig, seed: int) -> Cohort:
    return cohort_from(load_consortium(cfg.data, seed=seed))


def public_knowledge(cfg: DictConfig, cohort: Cohort) -> PublicKnowledge:
    likelihood, genotype, _, _ = settings_from(cfg)
    all_terms = [t for splits in cohort.sites.values() for p in splits.values() for t in p.terms]
    return PublicKnowledge(cohort.labels, signed_term_sets(all_terms), likelihood, genotype, cfg.get("annotation_path"), tuple(cfg.databases), variant_model(cfg))


def variant_model(cfg: DictConfig):
    """The pathogenicity of candidate rows: the project's variant model when `variant_model` names a run, else in-silico scores."""
    if not cfg.get("variant_model"):
        return None
    from federation.tasks.diagnosis.variant_model import VariantModelPathogenicity

    return VariantModelPathogenicity(cfg.variant_model)


def _likelihood(ctx: Context, per_site, shared):
    """The training-free likelihood-ratio ranker: public knowledge only, every weight 1, no case counts."""
    knowledge = evidence_for(ctx.public, None, ctx.profiles)
    tables = EvidenceTensors.of(knowledge, ctx.public.terms)
    ranker = DiagnosisScorer(ctx.public.hpo.size)  # untrained: the likelihood-ratio ranker itself
    return {site: _evaluate(ranker, tables, ctx, knowledge, patients, count=True) for site, patients in ctx.cohort.split("test").items()}, None


def _local(ctx: Context, per_site, shared):
    """Each site alone: its own counts (they never leave it) and its own training cases."""
    out = {}
    test = ctx.cohort.split("test")
    for i, (site, patients) in enumerate(ctx.cohort.split("train").items()):
        evidence = evidence_for(ctx.public, per_site[site], ctx.profiles)
        tables = EvidenceTensors.of(evidence, ctx.public.terms)
        model = train_alone(tables, ctx.features(evidence, patients, True), ctx.training, ctx.public.hpo.size, ctx.seed + i)
        out[site] = _evaluate(model, tables, ctx, evidence, test[site])
        ctx.trained.setdefault("local", {})[site] = (model, tables, evidence)
    return out, None


def _federated(ctx: Context, per_site, shared):
    """The counts the sites shared (each site adding back its own in full), and the scorer trained by FedAvg."""
    evidence = {
        site: evidence_for(ctx.public, site_view(per_site[site], shared, ctx.profiles.min_count, ctx.profiles.secure), ctx.profiles)
        for site in per_site
    }
    tables = {site: EvidenceTensors.of(e, ctx.public.terms) for site, e in evidence.items()}
    sites = {s: (tables[s], ctx.features(evidence[s], p, True)) for s, p in ctx.cohort.split("train").items()}
    model = train_federated(sites, ctx.training, ctx.public.hpo.size, ctx.seed)
    hits = {site: _evaluate(model, tables[site], ctx, evidence[site], patients) for site, patients in ctx.cohort.split("test").items()}
    ctx.trained["federated"] = {site: (model, tables[site], evidence[site]) for site in per_site}
    return hits, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _deployed(ctx: Context, per_site, shared):
    """Each site's choice between its local-only and the federated scorer (and, with `deployment.blend`, the federated
    scorer blended with the training-free rankers, blend.py), on its validation publications only."""
    missing = [c for c in CANDIDATES if c not in ctx.trained]
    if missing:
        raise ValueError(f"the deployed approach needs {missing} to run first")
    val, test = ctx.cohort.split("val"), ctx.cohort.split("test")
    val_scores = {c: {site: _scores(ctx, c, site, val[site]) for site in per_site} for c in CANDIDATES}
    val_hits = {c: {site: _hits(val_scores[c][site], val[site].labels, ctx.public) for site in per_site} for c in CANDIDATES}
    blends = {}
    if (ctx.cfg.get("deployment") or {}).get("blend"):
        val_hits[BLEND], blends = {}, {}
        for site in per_site:
            val_hits[BLEND][site], blends[site] = _blend_on_validation(ctx, site, val[site], val_scores["federated"][site])
    choices = choose_sites(val_hits)
    hits = {}
    for site, choice in choices.items():
        if choice.deployed == BLEND:
            scores = blends[site](_scores(ctx, "federated", site, test[site]), *_ranker_scores(ctx, test[site]))
        else:
            scores = _scores(ctx, choice.deployed, site, test[site])
        hits[site] = _hits(scores, test[site].labels, ctx.public)
        ctx.deployment[site] = choice.as_record() | ({"blend": blends[site].as_record()} if site in blends else {})
    return hits, None


def _scores(ctx: Context, approach: str, site: str, patients: Patients) -> np.ndarray:
    """[N, C] scores over every candidate of `approach`'s scorer at `site`."""
    model, tables, evidence = ctx.trained[approach][site]
    return score(model, tables, ctx.features(evidence, patients, leave_out=False)).numpy()


def _ranker_scores(ctx: Context, patients: Patients) -> tuple[np.ndarray, np.ndarray]:
    """[N, C] scores of the two training-free rankers: likelihood ratios from public knowledge, Resnik best match."""
    if "ranker" not in ctx.trained:
        knowledge = evidence_for(ctx.public, None, ctx.profiles)
        ctx.trained["ranker"] = (DiagnosisScorer(ctx.public.hpo.size), EvidenceTensors.of(knowledge, ctx.public.terms), knowledge)
    model, tables, knowledge = ctx.trained["ranker"]
    likelihood = score(model, tables, ctx.features(knowledge, patients, leave_out=False)).numpy()
    return likelihood, ctx.public.similarity(list(patients.terms))


def _blend_on_validation(ctx: Context, site: str, patients: Patients, federated: np.ndarray):
    """(the blend's cross-fitted validation hits, the blend fitted on all of the site's validation patients)."""
    scores = (federated, *_ranker_scores(ctx, patients))
    goal = lambda s, labels: objective(_hits(s, labels, ctx.public))  # noqa: E731
    if not len(patients):
        return _hits(federated, patients.labels, ctx.public), blend.Blend((0.0, 0.0))
    scored = blend.cross_fitted(scores, patients.labels, goal, seed=ctx.seed)
    return _hits(scored, patients.labels, ctx.public), blend.fit(scores, patients.labels, goal)


def _pooled(ctx: Context, per_site, shared):
    """Everyone's training cases in one place: the reference privacy rules forbid."""
    counts = list(per_site.values())
    evidence = evidence_for(ctx.public, sum(counts[1:], start=counts[0]), ctx.profiles)
    tables = EvidenceTensors.of(evidence, ctx.public.terms)
    everyone = Patients.concat(list(ctx.cohort.split("train").values()))
    model = train_alone(tables, ctx.features(evidence, everyone, True), ctx.training, ctx.public.hpo.size, ctx.seed)
    return {site: _evaluate(model, tables, ctx, evidence, patients) for site, patients in ctx.cohort.split("test").items()}, None


def _evaluate(model, tables: EvidenceTensors, ctx: Context, evidence: Evidence, patients: Patients, count: bool = False) -> dict[str, np.ndarray]:
    features = ctx.features(evidence, patients, leave_out=False, count=count)
    return _hits(score(model, tables, features).numpy(), patients.labels, ctx.public)


def _hits(scores: np.ndarray, labels: np.ndarray, public: PublicKnowledge) -> dict[str, np.ndarray]:
    """Per-patient metric values from scores over every candidate; the closed set is the label columns."""
    if not len(scores):
        return patient_hits(np.empty(0), np.empty(0))
    return patient_hits(ranks(scores[:, public.label_columns], labels), ranks(scores, public.label_columns[labels]))


def _resnik(ctx: Context, per_site, shared):
    """Resnik best-match similarity to the annotations: the phenotype-only ranker the project had."""
    public = ctx.public
    ranker = public.resnik  # the same ranker the scorer's similarity term reads
    out = {}
    for site, patients in ctx.cohort.split("test").items():
        terms = pad_sequences([torch.from_numpy(t) for t in patients.terms]) if len(patients) else torch.zeros(0, 1, dtype=torch.long)
        out[site] = _hits(ranker.scores(terms).numpy(), patients.labels, public)
    return out, None


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
