"""One patient's open differential from a diagnosis run, with the evidence behind each disease.

Every score is a sum of log likelihood ratios, so the explanation is exact, not an
approximation: each observed term's weighted contribution, each excluded term's,
and the genotype's, with the gene and candidate variant that carry it.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from federation.tasks.diagnosis.artefacts import load_run_model
from federation.tasks.diagnosis.cohort import Patients
from federation.tasks.diagnosis.evidence import PublicKnowledge, evidence_for, features_for
from federation.tasks.diagnosis.experiment import settings_from, variant_model
from federation.tasks.diagnosis.scorer import DiagnosisScorer, EvidenceTensors, score
from modalities.base import DataError
from modalities.phenopacket_io import read_phenopacket
from models.genotype_likelihood import row_pathogenicity
from models.knowledge import load_annotations
from models.phenotype_likelihood import signed_term_sets


def diagnose_patient(run_dir: str | Path, phenopacket: str | Path, vcf: str | Path | None = None, top_k: int = 10) -> dict[str, Any]:
    run_dir, phenopacket = Path(run_dir), Path(phenopacket)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    state, counts, labels = load_run_model(run_dir)
    likelihood, genotype, profiles, _ = settings_from(cfg)
    record = read_phenopacket(phenopacket)
    terms = instantiate(cfg.data.readers.phenotypes).read_site(phenopacket.parent, [record])[record.patient_id].numpy().astype(np.int64)
    if not (terms > 0).any():
        raise DataError(phenopacket, "no observed HPO term the ontology knows", record=record.patient_id, field="phenotypicFeatures")
    rows, columns = _variant_rows(cfg, record, vcf)
    public = PublicKnowledge(labels, signed_term_sets([terms]), likelihood, genotype, cfg.get("annotation_path"), tuple(cfg.databases), variant_model(cfg))
    evidence = evidence_for(public, counts, profiles)
    patient = Patients([record.patient_id], [terms], np.zeros(1, np.int64), [rows])
    fallbacks: Counter = Counter()
    features = features_for(public, evidence, patient, columns, profiles, leave_out=False, counts=fallbacks)
    model = DiagnosisScorer(public.hpo.size)
    model.load_compatible(state)
    logits = score(model, EvidenceTensors.of(evidence, public.terms), features)[0]
    probability = torch.softmax(logits, 0)
    order = torch.argsort(logits, descending=True, stable=True)[:top_k].tolist()
    names = _names(public.candidates, cfg)
    weights = model.term_log_weight.detach().exp().numpy()
    return {
        "patient_id": record.patient_id,
        "candidates": len(public.candidates),
        "variants": 0 if rows is None else len(rows),
        "fallbacks": dict(fallbacks),
        "differential": [
            {
                "rank": r + 1, "disease": public.candidates[d], "name": names[d], "probability": float(probability[d]), "score": float(logits[d]),
                **_evidence_of(d, public, evidence, features, terms, weights, model, rows, columns, genotype),
            }
            for r, d in enumerate(order)
        ],
    }


def _variant_rows(cfg, record, vcf) -> tuple[np.ndarray | None, tuple[str, ...]]:
    readers = cfg.data.get("readers") or {}
    if vcf is None and not (readers.get("variants") and record.variants):
        return None, ()
    if not readers.get("variants"):
        raise DataError(Path(vcf), "this run was trained without variants (data.readers.variants)", field="--vcf")
    reader = instantiate(readers.variants)
    table = reader.read_file(Path(vcf), record) if vcf is not None else reader.read_phenopacket_variants(record)
    return table.numpy().astype(np.float32), tuple(reader.columns)


def _names(candidates: tuple[str, ...], cfg) -> list[str]:
    annotations = load_annotations(cfg.get("annotation_path"), tuple(cfg.databases))
    position = annotations.position
    return [annotations.names[position[d]] if d in position else "(no annotation in phenotype.hpoa)" for d in candidates]


def _evidence_of(d, public, evidence, features, terms, weights, model, rows, columns, genotype_settings) -> dict[str, Any]:
    hpo = public.hpo
    seen, ruled_out = evidence.column(d)
    scale = float(model.term_scale(torch.tensor(int((terms > 0).sum()))).detach())
    observed = [(int(t) - 1, scale * float(weights[int(t) - 1] * seen[public.row_of[int(t) - 1]])) for t in terms if t > 0]
    excluded_weight = float(model.excluded_weight.detach())
    excluded = [(int(-t) - 1, excluded_weight * float(ruled_out[public.row_of[int(-t) - 1]])) for t in terms if t < 0]
    describe = lambda pairs: [{"term": hpo.term_ids[i], "name": hpo.names[i], "log_lr": round(v, 3)} for i, v in pairs]  # noqa: E731
    out = {
        "supporting_terms": describe(sorted((p for p in observed if p[1] > 0), key=lambda p: -p[1])[:3]),
        "against_terms": describe(sorted((p for p in observed + excluded if p[1] < 0), key=lambda p: p[1])[:3]),
        "genotype_log_lr": round(float(model.genotype_weight.detach()) * float(features.genotype[0, d]), 3),
        "consortium_cases": int(round(np.expm1(float(evidence.prior[d])))),
        "prior_log": round(float(model.prior_weight.detach()) * float(evidence.prior[d]), 3),
        "similarity_score": round(float(model.similarity_weight.detach()) * float(features.similarity[0, d]), 3),
    }
    if rows is not None and len(rows):
        out["supporting_variant"] = _supporting_variant(d, evidence, rows, columns, genotype_settings, hpo, public.pathogenicity)
    return out


def _supporting_variant(d, evidence, rows, columns, settings, hpo, pathogenicity=None) -> dict[str, Any] | None:
    genes = set(evidence.genes[d].indices.tolist())
    col = {c: i for i, c in enumerate(columns)}
    codes = rows[:, col["gene"]].astype(np.int64) - 1
    inside = [i for i, g in enumerate(codes) if g >= 0 and int(g) in genes]
    if not inside:
        return None
    s = (pathogenicity or row_pathogenicity)(rows[inside], columns, settings)
    best = inside[int(np.argmax(s))]
    row = rows[best]
    return {
        "gene": hpo.gene_symbols[int(codes[best])],
        "row": int(best),
        "pathogenicity": round(float(s.max()), 3),
        "zygosity": {1.0: "heterozygous", 2.0: "homozygous"}.get(float(row[col["zygosity"]]), "unknown"),
        "allele_frequency": None if row[col["af_missing"]] > 0.5 else float(10 ** (-6 * row[col["af_neglog10"]])),
    }


def format_differential(result: dict) -> str:
    lines = [f"patient {result['patient_id']}: {result['candidates']} candidate diseases, {result['variants']} candidate variants"]
    for entry in result["differential"]:
        lines.append(f"{entry['rank']:>3}. {entry['disease']:<13} {entry['probability']:.3f}  {entry['name']}")
        if entry["consortium_cases"]:
            lines.append(f"       diagnosed in {entry['consortium_cases']} consortium training cases (prior {entry['prior_log']:+.2f})")
        if entry["similarity_score"]:
            lines.append(f"       Resnik similarity to its annotations ({entry['similarity_score']:+.2f})")
        for term in entry["supporting_terms"]:
            lines.append(f"       + {term['term']} {term['name']} ({term['log_lr']:+.2f})")
        for term in entry["against_terms"]:
            lines.append(f"       - {term['term']} {term['name']} ({term['log_lr']:+.2f})")
        variant = entry.get("supporting_variant")
        if variant:
            lines.append(f"       gene {variant['gene']} ({variant['zygosity']}, pathogenicity {variant['pathogenicity']:.2f}): genotype {entry['genotype_log_lr']:+.2f}")
        elif entry["genotype_log_lr"]:
            lines.append(f"       no candidate variant in its genes: genotype {entry['genotype_log_lr']:+.2f}")
    return "\n".join(lines)
