"""Heads mapping the fused patient embedding to logits over the diagnosis label space."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ClassificationHead(nn.Module):
    def __init__(self, n_classes: int, embed_dim: int = 64, hidden_dim: int | None = None, dropout: float = 0.1):
        super().__init__()
        self.n_classes = n_classes
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden_dim:
            layers += [nn.Linear(embed_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden_dim or embed_dim, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        return self.net(fused)


RESIDUAL_POLICIES = ("unannotated", "all", "none")


class KnowledgeHead(nn.Module):
    """Scores every disease from its HPO annotations, so diseases with few or no training cases rank too.

    logit(patient, disease) = s * prior + <u(fused), v(disease)> + r[label]
    - prior: the training-free best-match similarity of the patient's observed terms
      to the disease's annotations (models/knowledge.py), weighted by a learned s,
      minus the patient's similarity to itself: the information (IC) of the patient's
      terms that the disease leaves unexplained, <= 0, whatever the candidate list.
      A disease the annotation file lacks gets a learned value on that scale instead;
    - v(disease): the disease's IC-weighted annotation closure through a learned
      HPO term embedding, so what is learned about one disease's terms carries over
      to every disease that shares them, seen in training or not;
    - r: a per-label residual (zero at start), the only part that needs cases of
      that disease; it is how diseases the annotation file lacks get learned.
      `residual="unannotated"` (default) keeps it for those diseases only: a
      residual on an annotated disease is pushed down at every site that never
      sees it, until it buries what the annotations say ("all" keeps it for every
      label, "none" for none).
    Every parameter is shared by all sites (FedAvg averages them); the disease tables
    are non-persistent buffers rebuilt from the annotation file.

    The prior needs the patient's HPO terms, which the fused embedding no longer
    holds: `bind(model, labels)` sets the label diseases and registers a forward
    pre-hook on the whole model that hands the head the batch's `terms_from` input.
    """

    def __init__(
        self,
        n_classes: int,
        embed_dim: int = 64,
        labels: list[str] | None = None,
        term_dim: int = 64,
        prior_scale: float = 1.0,
        dropout: float = 0.1,
        annotation_path: str | None = None,
        databases: tuple[str, ...] | list[str] = ("OMIM",),
        terms_from: str = "phenotypes",
        residual: str = "unannotated",
    ):
        super().__init__()
        from modalities.hpo import load_hpo_index

        index = load_hpo_index()
        self.n_classes = n_classes
        self.annotation_path = annotation_path
        self.databases = tuple(databases)
        self.terms_from = terms_from
        if residual not in RESIDUAL_POLICIES:
            raise ValueError(f"residual must be one of {RESIDUAL_POLICIES}, got {residual!r}")
        self.residual = residual
        self.term_embedding = nn.Parameter(torch.randn(index.size, term_dim) * 0.02)
        # No normalisation on the disease side: a disease whose terms training never touched keeps a
        # near-zero vector (its score stays the prior) instead of a random unit one.
        self.disease_proj = nn.Linear(term_dim, embed_dim)
        self.patient_proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, embed_dim))
        nn.init.zeros_(self.patient_proj[1].weight)  # the learned correction starts at zero: the prior ranks first
        self.log_prior_scale = nn.Parameter(torch.tensor(float(prior_scale)).log())
        self.missing_prior = nn.Parameter(torch.tensor(-1.0))  # the prior of a disease the annotation file lacks
        self.label_residual = nn.Parameter(torch.zeros(n_classes))
        self.register_buffer("ancestor_indptr", torch.from_numpy(index.ancestor_indptr), persistent=False)
        self.register_buffer("ancestor_indices", torch.from_numpy(index.ancestor_indices), persistent=False)
        from models.knowledge import information_content

        ic = information_content(annotation_path, self.databases)
        self.register_buffer("information", torch.from_numpy(ic).unsqueeze(1), persistent=False)
        self._terms: torch.Tensor | None = None
        self._hook = None
        self.labels: tuple[str, ...] = ()
        if labels:
            self.set_labels(labels)

    def set_labels(self, labels) -> None:
        labels = tuple(labels)
        if len(labels) != self.n_classes:
            raise ValueError(f"KnowledgeHead has {self.n_classes} classes but got {len(labels)} labels")
        self.labels = labels
        profiles, weights, known = self._tables(labels)
        device = self.term_embedding.device
        self.register_buffer("profiles", profiles.to(device), persistent=False)
        self.register_buffer("prior_weights", weights.to_dense().to(device), persistent=False)
        self.register_buffer("known", known.to(device), persistent=False)
        uses_residual = {"all": torch.ones_like(known), "unannotated": ~known, "none": torch.zeros_like(known)}[self.residual]
        self.register_buffer("uses_residual", uses_residual.to(device), persistent=False)

    def bind(self, model: nn.Module, labels) -> None:
        """Use the label diseases `labels` and read the patients' terms from every forward of `model`."""
        self.set_labels(labels)
        if self._hook is not None:
            self._hook.remove()
        self._hook = model.register_forward_pre_hook(self._capture_terms)

    def _capture_terms(self, module: nn.Module, args: tuple) -> None:
        inputs = args[0] if args else {}
        self._terms = inputs.get(self.terms_from) if hasattr(inputs, "get") else None

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        if not self.labels:
            raise RuntimeError("KnowledgeHead has no label diseases: pass labels= or call bind(model, labels)")
        from models.knowledge import best_match_scores

        terms = self._batch_terms(fused)
        prior = best_match_scores(terms, self.prior_weights, ancestors=(self.ancestor_indptr, self.ancestor_indices))
        return self.score(fused, terms, prior, self.profiles, self.known, self.label_residual * self.uses_residual)

    def score(self, fused, terms, prior, profiles, known, residual) -> torch.Tensor:
        """Logits [B, C] for C diseases: terms [B, T], prior [B, C] similarity, profiles [C, n_terms] (sparse), known [C], residual [C]."""
        from models.knowledge import best_match_scores

        itself = best_match_scores(terms, self.information, ancestors=(self.ancestor_indptr, self.ancestor_indices))
        prior = prior.to(fused.device) - itself
        prior = torch.where(known.unsqueeze(0), prior, self.missing_prior.to(prior.dtype))
        diseases = self.disease_proj(torch.sparse.mm(profiles, self.term_embedding))
        learned = self.patient_proj(fused) @ diseases.T.to(fused.dtype)
        return self.log_prior_scale.exp() * prior.to(learned.dtype) + learned + residual.to(learned.dtype)

    def residual_for(self, disease_ids) -> torch.Tensor:
        """The label residual for any list of diseases: 0 for those outside the label space."""
        position = {d: i for i, d in enumerate(self.labels)}
        rows = torch.tensor([position.get(d, -1) for d in disease_ids], device=self.label_residual.device)
        residual = self.label_residual * self.uses_residual
        return torch.where(rows >= 0, residual[rows.clamp(min=0)], torch.zeros((), device=rows.device))

    @staticmethod
    def disease_tables(disease_ids, annotation_path: str | None = None, databases=("OMIM",)) -> tuple[torch.Tensor, torch.Tensor]:
        """(profiles [C, n_terms] sparse, known [C]) for any diseases, e.g. every annotated one (the open setting)."""
        from models.knowledge import disease_profiles

        profiles, known = disease_profiles(disease_ids, annotation_path, tuple(databases))
        return _sparse(profiles), torch.from_numpy(known)

    def _batch_terms(self, fused: torch.Tensor) -> torch.Tensor:
        terms = self._terms
        if terms is None or terms.shape[0] != fused.shape[0]:
            return torch.zeros(fused.shape[0], 0, dtype=torch.long, device=fused.device)  # no terms: the prior is 0 for all
        return terms

    def _tables(self, disease_ids) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from models.knowledge import similarity_weights

        profiles, known = self.disease_tables(disease_ids, self.annotation_path, self.databases)
        return profiles, _sparse(similarity_weights(disease_ids, self.annotation_path, self.databases)), known


def _sparse(matrix) -> torch.Tensor:
    coo = matrix.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data), coo.shape, check_invariants=True).coalesce()
