"""The trained diagnosis scorer: disease-agnostic weights on likelihood-ratio evidence, full softmax over every candidate.

    logit(p, d) = n_p^(-b) * sum_t exp(theta_t) * LLR_obs(t, d) + w_exc * sum_t LLR_exc(t, d) + w_geno * LLR_geno(p, d)
                  + w_prior * prior(d) + w_sim * sim(p, d)

Every parameter is disease-agnostic: theta is one reliability weight per HPO term
(how far a clinician's report of that term can be trusted), the w's scale whole kinds
of evidence. b tempers the phenotype by the patient's number of observed terms n_p:
summing log LRs treats terms as independent, but a report's terms are correlated
(a syndrome is described by many related findings), so a long report would otherwise
outvote a causative variant; b = 0 is the plain sum (`temper_terms: false` keeps it there).
sim is the Resnik best-match similarity of the report to the disease's annotations
(evidence.py), the other training-free ranker: it scores each observed term by its
best match only, so it forgives what a likelihood sum punishes (a term the annotation
lacks, a long report), and the two rankers win on different sites. w_sim starts at 0
and is learned (`resnik_similarity: false` keeps it there).
So what a site learns transfers to diseases no site has seen. It starts
as the likelihood-ratio ranker (theta = 0, w = 1, w_prior = 0), and training is a
cross-entropy over all ~8,400 candidates (the open setting), not only the labels,
plus, weighted by `closed_weight`, a cross-entropy among the label diseases alone
(closed_loss): the open softmax is ruled by the thousands of annotated-only diseases,
while the closed ranking turns on the few label diseases whose case profiles compete.
An L2 pull towards the start keeps a small site from undoing public knowledge.

Training across sites is FedAvg (McMahan et al. 2017): each round every site takes
`local_epochs` of Adam from the global weights on its own training cases, sends the
change, and the coordinator averages the changes weighted by cases
(federation/aggregate.py). Only weights travel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from federation.aggregate import weighted_mean_per_key
from federation.tasks.diagnosis.evidence import Evidence, Features


@dataclass(frozen=True)
class TrainSettings:
    rounds: int = 10
    local_epochs: int = 1
    lr: float = 0.05
    batch_size: int = 32
    l2: float = 1e-3
    temper_terms: bool = False  # learn b, the exponent of the observed-term count (module docstring)
    resnik_similarity: bool = False  # learn w_sim, the weight of the Resnik similarity (module docstring)
    closed_weight: float = 0.0  # weight of a second cross-entropy over the label diseases only (closed_loss)


class DiagnosisScorer(nn.Module):
    def __init__(self, n_terms: int):
        super().__init__()
        self.term_log_weight = nn.Parameter(torch.zeros(n_terms))
        self.excluded_weight = nn.Parameter(torch.tensor(1.0))
        self.genotype_weight = nn.Parameter(torch.tensor(1.0))
        self.prior_weight = nn.Parameter(torch.tensor(0.0))
        self.term_count_exponent = nn.Parameter(torch.tensor(0.0))
        self.similarity_weight = nn.Parameter(torch.tensor(0.0))

    def logits(
        self, tables: EvidenceTensors, rows: torch.Tensor, ruled_out: torch.Tensor, genotype: torch.Tensor, similarity: torch.Tensor,
        true: tuple | None = None, truth: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, C]; with `true` (leave-one-out values) and `truth`, each patient's own diagnosis column is rewritten
        (similarity is public knowledge only, so its own column needs no leave-one-out)."""
        weight = torch.where(rows >= 0, self.term_log_weight[tables.term_index[rows.clamp(min=0)]].exp(), torch.zeros(()))
        temper = self.term_scale((rows >= 0).sum(1))  # [B]
        observed = (tables.observed_rows(rows.clamp(min=0)) * weight.unsqueeze(-1)).sum(1) * temper.unsqueeze(1)
        excluded = (tables.excluded_rows(ruled_out.clamp(min=0)) * (ruled_out >= 0).unsqueeze(-1)).sum(1)
        out = observed + self.excluded_weight * excluded + self.genotype_weight * genotype + self.prior_weight * tables.prior + self.similarity_weight * similarity
        if true is not None:
            true_observed, true_excluded, true_genotype, true_prior = true
            own = (true_observed * weight).sum(1) * temper + self.excluded_weight * true_excluded.sum(1) + self.genotype_weight * true_genotype + self.prior_weight * true_prior
            own = own + self.similarity_weight * similarity.gather(1, truth.unsqueeze(1)).squeeze(1)
            out = out.scatter(1, truth.unsqueeze(1), own.unsqueeze(1))
        return out

    def term_scale(self, n_observed: torch.Tensor) -> torch.Tensor:
        """n^-b: what one observed term's log LR counts in a report of n observed terms."""
        return n_observed.clamp(min=1).float().pow(-self.term_count_exponent)

    def load_compatible(self, state: dict[str, torch.Tensor]) -> None:
        """A run saved before `term_count_exponent` or `similarity_weight` existed was trained with them at 0: load it as such."""
        self.load_state_dict({"term_count_exponent": torch.tensor(0.0), "similarity_weight": torch.tensor(0.0), **state})

    def penalty(self) -> torch.Tensor:
        scalars = (self.excluded_weight - 1) ** 2 + (self.genotype_weight - 1) ** 2 + self.prior_weight**2 + self.term_count_exponent**2 + self.similarity_weight**2
        return (self.term_log_weight**2).sum() + scalars


@dataclass
class EvidenceTensors:
    observed: torch.Tensor        # [Q, C] public knowledge, shared by every approach (not copied)
    excluded: torch.Tensor        # [Q, C]
    label_observed: torch.Tensor  # [Q, L] the label diseases' columns from this approach's counts
    label_excluded: torch.Tensor  # [Q, L]
    label_columns: torch.Tensor   # [L]
    prior: torch.Tensor           # [C]
    term_index: torch.Tensor      # [Q] HPO index of each table row

    @staticmethod
    def of(evidence: Evidence, terms: np.ndarray) -> EvidenceTensors:
        as_tensor = torch.from_numpy
        return EvidenceTensors(
            as_tensor(evidence.observed), as_tensor(evidence.excluded), as_tensor(np.ascontiguousarray(evidence.label_observed)),
            as_tensor(np.ascontiguousarray(evidence.label_excluded)), as_tensor(evidence.label_columns), as_tensor(evidence.prior), as_tensor(terms),
        )

    def observed_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """[..., C] observed log LRs of table rows, the label columns from this approach's counts."""
        return _with_labels(self.observed, self.label_observed, self.label_columns, rows)

    def excluded_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return _with_labels(self.excluded, self.label_excluded, self.label_columns, rows)


def _with_labels(public: torch.Tensor, labels: torch.Tensor, columns: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    out = public[rows]  # advanced indexing: a new tensor, so the shared public table is never written
    out[..., columns] = labels[rows]
    return out


@torch.no_grad()
def score(model: DiagnosisScorer, tables: EvidenceTensors, features: Features, chunk: int = 64) -> torch.Tensor:
    """[N, C] logits of patients (no leave-one-out: they are not in the counts)."""
    out = []
    for start in range(0, len(features.truth), chunk):
        part = slice(start, start + chunk)
        out.append(model.logits(tables, *_inputs(features, part)))
    return torch.cat(out) if out else torch.zeros(0, tables.observed.shape[1])


def train_local(model: DiagnosisScorer, tables: EvidenceTensors, features: Features, epochs: int, settings: TrainSettings, seed: int) -> None:
    """Adam on one site's (or the pooled) training cases, cross-entropy over every candidate."""
    generator = torch.Generator().manual_seed(seed)
    model.term_count_exponent.requires_grad_(settings.temper_terms)
    model.similarity_weight.requires_grad_(settings.resnik_similarity)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr)
    n = len(features.truth)
    for _ in range(epochs):
        for batch in torch.randperm(n, generator=generator).split(settings.batch_size):
            index = batch.numpy()
            truth = torch.from_numpy(features.truth[index])
            logits = model.logits(tables, *_inputs(features, index), true=_true(features, index), truth=truth)
            loss = nn.functional.cross_entropy(logits, truth) + settings.l2 * model.penalty()
            if settings.closed_weight:
                loss = loss + settings.closed_weight * closed_loss(logits, truth, tables.label_columns)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def closed_loss(logits: torch.Tensor, truth: torch.Tensor, label_columns: torch.Tensor) -> torch.Tensor:
    """Cross-entropy among the label diseases alone: the closed setting, where the competitors are the other
    diseases the consortium has cases of (their columns come from case profiles, unlike the ~8,400 open ones).
    The open softmax is dominated by the many annotated-only diseases, so this term asks the same disease-agnostic
    weights to also separate the label diseases from each other."""
    is_label = label_columns.unsqueeze(0) == truth.unsqueeze(1)  # [B, L]
    if not bool(is_label.any(1).all()):
        raise ValueError("closed_loss: a training patient's diagnosis is not among the label columns")
    target = is_label.float().argmax(1)
    return nn.functional.cross_entropy(logits[:, label_columns], target)


def train_federated(sites: dict[str, tuple[EvidenceTensors, Features]], settings: TrainSettings, n_terms: int, seed: int) -> DiagnosisScorer:
    """FedAvg over the sites' training cases; the coordinator sees only weight changes and case counts."""
    global_model = DiagnosisScorer(n_terms)
    for round_ in range(settings.rounds):
        state = {k: v.detach().clone() for k, v in global_model.state_dict().items()}
        updates = []
        for i, (name, (tables, features)) in enumerate(sorted(sites.items())):
            if not len(features.truth):
                continue
            local = DiagnosisScorer(n_terms)
            local.load_state_dict(state)
            train_local(local, tables, features, settings.local_epochs, settings, seed=seed * 1000 + round_ * 50 + i)
            delta = {k: v.detach() - state[k] for k, v in local.state_dict().items()}
            updates.append((delta, {k: float(len(features.truth)) for k in delta}))
        mean = weighted_mean_per_key(updates)
        global_model.load_state_dict({k: state[k] + mean.get(k, torch.zeros_like(state[k])) for k in state})
    return global_model


def train_alone(tables: EvidenceTensors, features: Features, settings: TrainSettings, n_terms: int, seed: int) -> DiagnosisScorer:
    """Local-only and pooled: the same budget in epochs as the federated run, on one body of data."""
    model = DiagnosisScorer(n_terms)
    if len(features.truth):
        train_local(model, tables, features, settings.rounds * settings.local_epochs, settings, seed)
    return model


def _inputs(features: Features, index) -> tuple[torch.Tensor, ...]:
    return (
        torch.from_numpy(features.observed_rows[index]),
        torch.from_numpy(features.excluded_rows[index]),
        torch.from_numpy(features.genotype[index]),
        torch.from_numpy(features.similarity[index]),
    )


def _true(features: Features, index) -> tuple | None:
    if features.true_observed is None:
        return None
    return tuple(torch.from_numpy(a[index]) for a in (features.true_observed, features.true_excluded, features.true_genotype, features.true_prior))
