"""Disease knowledge from phenotype.hpoa: the training-free ranker, the knowledge head, the phenopacket experiment."""
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from support import compose_config

from federation.driver.extra_evaluation import ranks_of
from models.encoders.phenotypes import HpoSetEncoder
from models.fusion import MaskedMeanFusion
from models.heads import KnowledgeHead
from models.knowledge import (
    MISSING_SCORE,
    KnowledgeRanker,
    load_annotations,
    parse_frequency,
)
from models.multimodal import MultimodalClassifier

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT.parent / "shared" / "data" / "phenopackets"


@pytest.fixture(scope="module")
def annotations():
    return load_annotations()


def sample_diseases(annotations, n, seed=0, min_terms=5):
    rich = [d for d, t in zip(annotations.disease_ids, annotations.terms) if len(t) >= min_terms]
    return random.Random(seed).sample(rich, n)


def as_patient(annotations, disease_id):
    """A patient whose observed terms are exactly the disease's annotations, as PhenotypeReader encodes them."""
    return torch.from_numpy(annotations.terms[annotations.position[disease_id]] + 1).unsqueeze(0)


def test_frequencies_parse():
    assert parse_frequency("HP:0040281") == pytest.approx(0.895)
    assert parse_frequency("3/4") == 0.75 and parse_frequency("25%") == 0.25 and parse_frequency("") == 1.0
    assert parse_frequency("HP:0040285") == 0.0


def test_ranker_ranks_a_disease_first_for_its_own_annotations(annotations):
    diseases = sample_diseases(annotations, 20)
    ranker = KnowledgeRanker(diseases)

    for i, disease in enumerate(diseases):
        scores = ranker.scores(as_patient(annotations, disease))[0]
        assert int(scores.argmax()) == i or scores[i] == scores.max()


def test_ranker_scores_an_unannotated_disease_as_a_miss(annotations):
    ranker = KnowledgeRanker([annotations.disease_ids[0], "OMIM:999999"])

    scores = ranker.scores(as_patient(annotations, annotations.disease_ids[0]))

    assert ranker.missing == ["OMIM:999999"]
    assert scores[0, 1] == MISSING_SCORE
    assert ranks_of(scores, torch.tensor([1])).item() == 1


def knowledge_model(labels):
    torch.manual_seed(0)
    model = MultimodalClassifier(
        {"phenotypes": HpoSetEncoder(embed_dim=16, term_dim=16, hidden_dim=16)},
        MaskedMeanFusion(["phenotypes"], embed_dim=16),
        KnowledgeHead(len(labels), embed_dim=16, term_dim=8),
        embed_dim=16,
    )
    model.head.bind(model, labels)
    return model


def test_knowledge_head_scores_a_label_with_no_training_cases(annotations):
    labels = sorted(sample_diseases(annotations, 3, seed=1))
    model = knowledge_model(labels)
    present = torch.ones(1, 1, dtype=torch.bool)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen = torch.cat([as_patient(annotations, labels[0]), torch.zeros(1, 200, dtype=torch.long)], 1)[:, :200]
    other = torch.cat([as_patient(annotations, labels[1]), torch.zeros(1, 200, dtype=torch.long)], 1)[:, :200]
    for step in range(5):  # a little training on labels 0 and 1 only
        logits = model({"phenotypes": torch.cat([seen, other])}, present.expand(2, 1))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
        optimizer.zero_grad(), loss.backward(), optimizer.step()

    model.eval()
    logits = model({"phenotypes": as_patient(annotations, labels[2])}, present)

    assert logits.shape == (1, 3)
    assert int(logits.argmax()) == 2


def test_knowledge_head_has_no_per_site_state_and_scores_any_disease(annotations):
    labels = sorted(sample_diseases(annotations, 3, seed=2))
    model = knowledge_model(labels)
    head = model.head
    others = sample_diseases(annotations, 5, seed=3)
    profiles, known = head.disease_tables(others)
    fused = torch.randn(2, 16)

    terms = torch.cat([as_patient(annotations, others[0])] * 2)
    logits = head.score(fused, terms, torch.zeros(2, len(others)), profiles, known, head.residual_for(others))

    assert logits.shape == (2, len(others))
    assert all(k.startswith(("term_embedding", "disease_proj", "patient_proj", "log_prior_scale", "missing_prior", "label_residual")) for k in head.state_dict())


def test_knowledge_head_without_labels_says_so():
    head = KnowledgeHead(2, embed_dim=8, term_dim=4)

    with pytest.raises(RuntimeError, match="bind"):
        head(torch.randn(1, 8))


def compose_experiment(overrides):
    return compose_config(["experiment=phenopackets_dx", *overrides])


def test_experiment_config_composes():
    cfg = compose_experiment(["data.root=/nonexistent"])

    assert cfg.data.loader == "modalities.phenopacket_store.load_phenopacket_store"
    assert cfg.model.head._target_ == "models.heads.KnowledgeHead"
    assert set(cfg.model.encoders) == {"phenotypes"}
    assert dict(cfg.report.metrics) == {"top1": "accuracy", "top5": "top5_accuracy"}
    assert cfg.data.num_sites == 8 and cfg.data.min_cases == 10


@pytest.mark.skipif(not STORE.is_dir(), reason="no shared phenopacket store")
def test_tiny_phenopacket_experiment_end_to_end(tmp_path):
    from federation.driver.experiment import run_experiment

    for cohort in ("AK2", "DVL1", "ISCA2"):
        shutil.copytree(STORE / cohort, tmp_path / "store" / cohort)
    cfg = compose_experiment([f"data.root={tmp_path / 'store'}", "data.num_sites=2", "federation.rounds=1",
                              "baselines.epochs=1", "progress=false", "data.batch_size=8"])

    summary = run_experiment(cfg, tmp_path / "run")

    assert set(summary["overall"]) == {"local", "federated", "pooled", "knowledge"}
    for approach in summary["overall"].values():
        assert set(approach) == {"top1", "top5", "open_top1", "open_top10"}
        assert 0.0 <= approach["open_top1"] <= approach["open_top10"] <= 1.0
    assert summary["extra_evaluation"]["open_candidates"] > 1000
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["sites"]["site_0"]["knowledge"]
