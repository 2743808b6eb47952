"""Public pretraining before private rounds: patients simulated from the HPO annotations, the model trained on them."""
from functools import partial

import torch

from federation.privacy.hooks import pretrain_public
from federation.privacy.public_pretraining import simulated_patients
from modalities.hpo import load_hpo_index
from models.encoders.labs import LabEncoder
from models.encoders.phenotypes import HpoSetEncoder
from models.fusion import MaskedMeanFusion
from models.heads import ClassificationHead
from models.knowledge import load_annotations
from models.lit_module import MultimodalLitModule
from models.multimodal import MultimodalClassifier

DISEASES = ["OMIM:263570", "OMIM:300894", "OMIM:300957"]
UNANNOTATED = "OMIM:999999"
SETTINGS = {"patients_per_disease": 30, "epochs": 3, "batch_size": 16}


def phenotype_module() -> MultimodalLitModule:
    torch.manual_seed(0)
    encoders = {"phenotypes": HpoSetEncoder(embed_dim=16, term_dim=16, hidden_dim=32), "labs": LabEncoder(["a", "b"], embed_dim=16)}
    model = MultimodalClassifier(encoders, MaskedMeanFusion(["labs", "phenotypes"], 16), ClassificationHead(len(DISEASES) + 1, 16), 16)
    return MultimodalLitModule(model, optimizer=partial(torch.optim.Adam, lr=0.01))


def accuracy(module, seed: int) -> float:
    terms, labels = simulated_patients([*DISEASES, UNANNOTATED], 20, seed)
    padded = torch.nn.utils.rnn.pad_sequence(terms, batch_first=True)
    present = torch.tensor([[False, True]] * len(terms))
    module.model.eval()
    with torch.no_grad():
        return float((module.model({"phenotypes": padded}, present).argmax(1) == torch.tensor(labels)).float().mean())


def test_simulated_patients_hold_their_diseases_annotated_terms_and_skip_unannotated_labels():
    annotations = load_annotations()
    terms, labels = simulated_patients([DISEASES[0], UNANNOTATED, DISEASES[1]], 10, seed=0)
    again, _ = simulated_patients([DISEASES[0], UNANNOTATED, DISEASES[1]], 10, seed=0)

    assert labels == [0] * 10 + [2] * 10
    for patient, label in zip(terms, labels):
        disease = [DISEASES[0], UNANNOTATED, DISEASES[1]][label]
        annotated = set(annotations.terms[annotations.position[disease]].tolist())
        assert len(patient) >= 1 and set((patient - 1).tolist()) <= annotated
    assert all(torch.equal(a, b) for a, b in zip(terms, again))


def test_generalised_terms_are_ancestors_of_annotated_ones():
    hpo, annotations = load_hpo_index(), load_annotations()
    annotated = annotations.terms[annotations.position[DISEASES[0]]]
    allowed = {int(a) for t in annotated for a in hpo.ancestors(int(t))}

    terms, _ = simulated_patients([DISEASES[0]], 20, seed=0, generalise=1.0)

    indices = {int(t) for patient in terms for t in patient - 1}
    assert indices <= allowed and not indices <= set(annotated.tolist())


def test_pretraining_teaches_the_diseases_and_silences_the_encoders_without_public_data():
    module = phenotype_module()
    before = accuracy(module, seed=7)

    used = pretrain_public({"kind": "dp_sgd", "public_pretraining": SETTINGS}, module, [*DISEASES, UNANNOTATED], seed=0)

    assert used == 3 * SETTINGS["patients_per_disease"]
    assert accuracy(module, seed=7) > max(before, 0.6)
    last = module.model.encoders["labs"].net[-1]
    assert torch.equal(last.weight, torch.zeros_like(last.weight)) and torch.equal(last.bias, torch.zeros_like(last.bias))


def test_no_pretraining_without_privacy_or_without_the_setting():
    module = phenotype_module()
    start = {k: v.clone() for k, v in module.state_dict().items()}

    assert pretrain_public({"kind": "none", "public_pretraining": SETTINGS}, module, DISEASES, seed=0) == 0
    assert pretrain_public({"kind": "dp_sgd", "public_pretraining": None}, module, DISEASES, seed=0) == 0
    assert all(torch.equal(start[k], v) for k, v in module.state_dict().items())
