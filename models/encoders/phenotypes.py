"""Set encoder over a patient's observed and excluded HPO terms.

A term is embedded as the sum of its own and all its ancestors' embeddings, so a
site that reports "Seizure" and one that reports "Focal clonic seizure" share most
of the representation: rare diseases are described at different levels of detail
by different clinicians, and the ontology is what lets a few cases generalise.
"""
from __future__ import annotations

import torch
from torch import nn

from modalities.hpo import load_hpo_index


class HpoSetEncoder(nn.Module):
    """DeepSets over HPO terms: phi per term (ontology-aware embedding + observed/excluded state), mean over terms, rho."""

    def __init__(self, embed_dim: int = 64, term_dim: int = 64, hidden_dim: int = 128, dropout: float = 0.1):
        super().__init__()
        index = load_hpo_index()
        # Sum over ancestors, not mean: a mean is dominated by the root terms every
        # phenotype shares, and the set encoder then barely tells patients apart.
        self.term_embedding = nn.EmbeddingBag(index.size, term_dim, mode="sum")
        nn.init.normal_(self.term_embedding.weight, std=0.3)
        self.state_embedding = nn.Embedding(2, term_dim)
        nn.init.normal_(self.state_embedding.weight, std=0.1)  # a small shift, not larger than a term's own signal
        self.register_buffer("ancestor_indptr", torch.from_numpy(index.ancestor_indptr), persistent=False)
        self.register_buffer("ancestor_indices", torch.from_numpy(index.ancestor_indices), persistent=False)
        self.phi = nn.Sequential(nn.Linear(term_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout))
        self.rho = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embed_dim))

    def forward(self, terms: torch.Tensor) -> torch.Tensor:
        """terms: [B, T] with index+1 of each term, negative when excluded, 0 for padding."""
        mask = terms != 0
        rows = mask.nonzero(as_tuple=True)[0]
        signed = terms[mask]
        term_vectors = self._ontology_embedding(signed.abs() - 1) + self.state_embedding((signed < 0).long())
        per_term = self.phi(term_vectors)
        pooled = per_term.new_zeros(terms.shape[0], per_term.shape[1]).index_add_(0, rows, per_term)
        counts = mask.sum(dim=1, keepdim=True).clamp(min=1)
        return self.rho(pooled / counts)

    def _ontology_embedding(self, term_index: torch.Tensor) -> torch.Tensor:
        """Summed embedding over each term's ancestors (itself included), gathered from CSR arrays."""
        starts = self.ancestor_indptr[term_index]
        lengths = self.ancestor_indptr[term_index + 1] - starts
        offsets = torch.cumsum(lengths, 0) - lengths
        within = torch.arange(int(lengths.sum()), device=term_index.device) - torch.repeat_interleave(offsets, lengths)
        flat = self.ancestor_indices[torch.repeat_interleave(starts, lengths) + within]
        return self.term_embedding(flat, offsets)
