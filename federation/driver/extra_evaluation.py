"""Evaluations beyond the trained approaches' closed-set metrics (phenopacket diagnosis).

- "knowledge": the training-free ranker (models/knowledge.py) on every site's test
  patients, over the label space, as a fourth approach beside local/federated/pooled.
  Label diseases the annotation file lacks (recent OMIM entries) can never be ranked
  first by it: they count as misses.
- the open setting: rank every disease of the annotation file (thousands), not only
  the labels: `open_top1`, `open_top10` for "knowledge" and for each trained approach
  whose head can score any disease (KnowledgeHead); NaN for the others. Candidates are
  the annotated diseases of `databases` plus the label space (a trained model knows
  its labels; the ranker scores a label without annotations as a miss).

`run_experiment` uses it only when the config has `extra_evaluation`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from omegaconf import DictConfig

from federation.site import Site
from models.knowledge import KnowledgeRanker, load_annotations

OPEN_METRICS = ("open_top1", "open_top10")


class ExtraEvaluation:
    def __init__(self, cfg: DictConfig, labels: Sequence[str], sites: Sequence[Site], terms_from: str = "phenotypes"):
        self.cfg = cfg
        self.labels = tuple(labels)
        self.sites = list(sites)
        self.terms_from = terms_from
        databases = tuple(cfg.get("databases") or ("OMIM",))
        self.annotation_path = cfg.get("annotation_path")
        self.databases = databases
        self.test = {s.name: _test_batch(s, terms_from) for s in self.sites}
        self.closed = KnowledgeRanker(self.labels, self.annotation_path, databases)
        self.ranks: dict[str, dict[str, torch.Tensor]] = {}
        if cfg.get("open_setting", True):
            annotated = load_annotations(self.annotation_path, databases).disease_ids
            self.open_ids = tuple(sorted(set(annotated) | set(self.labels)))
            position = {d: i for i, d in enumerate(self.open_ids)}
            self.open_truth = {n: torch.tensor([position[self.labels[y]] for y in b[1].tolist()], dtype=torch.long) for n, b in self.test.items()}
            ranker = KnowledgeRanker(self.open_ids, self.annotation_path, databases)
            self.open_known = torch.from_numpy(ranker.known)
            self.open_prior = {n: ranker.scores(b[0]) for n, b in self.test.items()}
            self.ranks["knowledge"] = {n: ranks_of(self.open_prior[n], self.open_truth[n]) for n in self.test}
            self._open_profiles = None

    def knowledge_predictions(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Closed-set scores of the training-free ranker, per site, in build_summary's (logits, labels) form."""
        return {n: (self.closed.scores(terms), labels) for n, (terms, labels) in self.test.items()}

    @torch.no_grad()
    def trained(self, approach: str, model: torch.nn.Module, sites: Sequence[Site], device: str = "cpu") -> None:
        """Open-setting ranks of the current model on `sites`' test patients (skipped unless its head scores any disease)."""
        head = getattr(model, "head", None)
        if not hasattr(self, "open_ids") or not hasattr(head, "disease_tables"):
            return
        if self._open_profiles is None:
            self._open_profiles = head.disease_tables(self.open_ids, head.annotation_path, head.databases)
        was_training = model.training
        model.eval().to(device)
        profiles, known = (t.to(device) for t in self._open_profiles)
        residual = head.residual_for(self.open_ids)
        for site in sites:
            fused = []
            for batch in site.loader("test"):
                inputs = {m: t.to(device) for m, t in batch["inputs"].items()}
                present = batch["present"].to(device)
                fused.append(model.fusion(model.embed(inputs, present), present))
            if not fused:
                continue
            terms = self.test[site.name][0].to(device)
            logits = head.score(torch.cat(fused), terms, self.open_prior[site.name].to(device), profiles, known, residual).float().cpu()
            self.ranks.setdefault(approach, {})[site.name] = ranks_of(logits, self.open_truth[site.name])
        model.train(was_training)

    def add_to(self, summary: dict) -> dict:
        """Open-setting metrics into the summary's `sites`, `overall` and `mean_over_sites` (NaN where not measured)."""
        approaches = list(summary["overall"])
        for site, entry in summary["sites"].items():
            for approach in approaches:
                ranks = self.ranks.get(approach, {}).get(site)
                entry[approach].update(open_metrics(ranks))
        for approach in approaches:
            per_site = self.ranks.get(approach, {})
            complete = len(per_site) == len(summary["sites"])
            summary["overall"][approach].update(open_metrics(torch.cat(list(per_site.values())) if complete else None))
            for metric in OPEN_METRICS:
                values = [summary["sites"][s][approach][metric] for s in summary["sites"]]
                values = [v for v in values if not math.isnan(v)]
                summary["mean_over_sites"][approach][metric] = sum(values) / len(values) if values else float("nan")
        summary["metric_names"] = list(summary["metric_names"]) + [m for m in OPEN_METRICS if m not in summary["metric_names"]]
        return summary

    def facts(self, site_train_labels: dict[str, set[int]]) -> dict:
        """What the table needs beside it: label diseases without annotations, unseen-disease share of test patients."""
        missing = set(self.closed.missing)
        test_labels = [(n, y) for n, (_, labels) in self.test.items() for y in labels.tolist()]
        return {
            "labels": len(self.labels),
            "labels_without_annotations": sorted(missing),
            "test_patients": len(test_labels),
            "test_patients_without_annotations": sum(self.labels[y] in missing for _, y in test_labels),
            "test_diseases_without_annotations": len({self.labels[y] for _, y in test_labels} & missing),
            "test_patients_unseen_at_own_site": sum(y not in site_train_labels[n] for n, y in test_labels),
            "open_candidates": len(getattr(self, "open_ids", ())),
        }


def ranks_of(scores: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """0-based rank of the true disease; ties count against it (a flat score ranks nothing first)."""
    true = scores.gather(1, truth.unsqueeze(1))
    return (scores >= true).sum(1) - 1


def open_metrics(ranks: torch.Tensor | None) -> dict[str, float]:
    if ranks is None or ranks.numel() == 0:
        return {m: float("nan") for m in OPEN_METRICS}
    return {"open_top1": float((ranks < 1).float().mean()), "open_top10": float((ranks < 10).float().mean())}


def _test_batch(site: Site, terms_from: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(terms [N, T], labels [N]) of a site's test split, in loader order."""
    terms, labels = [], []
    for batch in site.loader("test"):
        t = batch["inputs"].get(terms_from, torch.zeros(len(batch["label"]), 0, dtype=torch.long))
        terms.append(t)
        labels.append(batch["label"])
    if not terms:
        return torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    width = max(t.shape[1] for t in terms)
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in terms]), torch.cat(labels)
