"""The phenopacket store as a consortium: publication-level sites and splits."""
import shutil
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from modalities.phenopacket_store import (
    assign_sites,
    eligible_diseases,
    load_phenopacket_store,
    publication_of,
    split_publications,
)

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT.parent / "shared" / "data" / "phenopackets"


def store_cfg(root, **overrides):
    cfg = OmegaConf.load(ROOT / "conf" / "data" / "phenopackets.yaml")
    cfg.root = str(root)
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


@pytest.fixture
def store(tmp_path, write_phenopacket):
    """Disease A: 12 cases over 4 papers; B: 10 cases over 3 papers (one paper shared with A); C: 12 cases in 1 paper."""
    layout = {"OMIM:100001": {"1": 3, "2": 3, "3": 3, "4": 3}, "OMIM:100002": {"4": 2, "5": 4, "6": 4}, "OMIM:100003": {"7": 12}}
    for disease, papers in layout.items():
        for pmid, n in papers.items():
            for k in range(n):
                write_phenopacket(tmp_path / disease.replace(":", "_"), f"PMID_{pmid}_{disease[-1]}_{k}", observed=("HP:0001250",), label=disease)
    return tmp_path


def test_publication_comes_from_the_id_or_external_references(tmp_path, write_phenopacket):
    from modalities.phenopacket_io import read_phenopacket

    path = write_phenopacket(tmp_path, "PMID_123_P1")
    assert publication_of(read_phenopacket(path)) == "PMID:123"
    other = write_phenopacket(tmp_path, "patient-7")
    text = other.read_text().replace('"id": "patient-7"', '"id": "patient-7", "metaData": {"externalReferences": [{"id": "PMID:456"}]}', 1)
    other.write_text(text)
    assert publication_of(read_phenopacket(other)) == "PMID:456"


def test_diseases_need_cases_and_two_publications(store):
    consortium = load_phenopacket_store(store_cfg(store, num_sites=2), seed=0)

    assert consortium.label_space.labels == ("OMIM:100001", "OMIM:100002")  # C: one paper only


def test_no_publication_in_two_splits_and_every_disease_keeps_one_training_paper(store):
    consortium = load_phenopacket_store(store_cfg(store, num_sites=2), seed=0)

    papers = {split: {item["meta"]["publication"] for s in consortium.sites for item in s.splits[split].items} for split in ("train", "val", "test")}
    assert not papers["train"] & papers["test"] and not papers["train"] & papers["val"] and not papers["val"] & papers["test"]
    trained = {item["label"] for s in consortium.sites for item in s.splits["train"].items}
    assert trained == set(range(len(consortium.label_space)))
    assert papers["test"]


def test_each_publication_belongs_to_one_site(store):
    consortium = load_phenopacket_store(store_cfg(store, num_sites=3), seed=0)

    owners = Counter()
    for site in consortium.sites:
        owners.update({item["meta"]["publication"] for split in site.splits.values() for item in split.items})
    assert set(owners.values()) == {1}


def test_same_seed_same_consortium(store):
    first = load_phenopacket_store(store_cfg(store, num_sites=2), seed=3)
    second = load_phenopacket_store(store_cfg(store, num_sites=2), seed=3)

    for a, b in zip(first.sites, second.sites):
        for split in ("train", "val", "test"):
            assert a.splits[split].patient_ids == b.splits[split].patient_ids


def test_shared_paper_never_empties_a_diseases_training():
    papers_of = {"A": ["p1", "p2"], "B": ["p2", "p3"], "C": ["p3", "p1"]}
    sizes = {"p1": 5, "p2": 5, "p3": 5}

    for seed in range(20):
        split = split_publications(papers_of, sizes, test_fraction=0.5, val_fraction=0.0, seed=seed)
        assert all(any(split[p] == "train" for p in papers) for papers in papers_of.values())


def test_sites_are_balanced_within_each_split():
    sizes = {f"p{i}": 1 + i % 3 for i in range(30)}
    split = {p: "train" for p in sizes}

    site = assign_sites(sizes, split, num_sites=3, seed=0)

    loads = Counter()
    for paper, s in site.items():
        loads[s] += sizes[paper]
    assert max(loads.values()) - min(loads.values()) <= 3


def test_eligible_diseases_counts_cases_and_papers(store):
    from modalities.phenopacket_io import read_cohort

    records = read_cohort(store)
    publications = {r.patient_id: publication_of(r) for r in records}

    assert eligible_diseases(records, publications, min_cases=11, min_publications=2) == ["OMIM:100001"]


@pytest.mark.skipif(not STORE.is_dir(), reason="no shared phenopacket store")
def test_real_store_split_is_publication_level():
    cfg = store_cfg(STORE)
    consortium = load_phenopacket_store(cfg, seed=0)

    assert len(consortium.sites) == cfg.num_sites
    train = {item["meta"]["publication"] for s in consortium.sites for item in s.splits["train"].items}
    test = {item["meta"]["publication"] for s in consortium.sites for item in s.splits["test"].items}
    assert train and test and not train & test
    assert {item["label"] for s in consortium.sites for item in s.splits["train"].items} == set(range(len(consortium.label_space)))
