"""The phenopacket store as a consortium: publication-level sites and splits."""
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from modalities.phenopacket_store import (
    assign_sites,
    eligible_diseases,
    load_phenopacket_store,
    publication_of,
    split_publications,
)

ROOT = Path(__file__).resolve().parents[2]
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
@pytest.mark.slow  # reads the whole shared store
def test_real_store_split_is_publication_level():
    cfg = store_cfg(STORE)
    consortium = load_phenopacket_store(cfg, seed=0)

    assert len(consortium.sites) == cfg.num_sites
    train = {item["meta"]["publication"] for s in consortium.sites for item in s.splits["train"].items}
    test = {item["meta"]["publication"] for s in consortium.sites for item in s.splits["test"].items}
    assert train and test and not train & test
    assert {item["label"] for s in consortium.sites for item in s.splits["train"].items} == set(range(len(consortium.label_space)))


# --- variants among background candidates ---------------------------------------------------------

def _disease_genes(n):
    """n real OMIM diseases of genes_to_phenotype.txt with one gene each, in the gene vocabulary: [(disease, gene)]."""
    from modalities.annotations import load_annotations
    from modalities.hpo import load_hpo_index

    known = set(load_hpo_index().gene_symbols)
    genes = load_annotations().genes
    counts = genes.groupby("disease_id")["gene_symbol"].nunique()
    single = genes[genes["disease_id"].isin(counts[counts == 1].index) & genes["gene_symbol"].isin(known)]
    rows = single.sort_values("disease_id").drop_duplicates("gene_symbol").head(n)
    return list(zip(rows["disease_id"], rows["gene_symbol"]))


def _record(patient_id, label, gene, states=("GENO:0000135",)):
    from modalities.phenopacket_io import PatientRecord, VcfRecordVariant

    variants = tuple(
        VcfRecordVariant("hg38", "chr1", 1000 + k, "A", "G", gene, state, "", f"interpretations[0].diagnosis.genomicInterpretations[{k}]")
        for k, state in enumerate(states)
    )
    return PatientRecord(patient_id, label, "FEMALE", 3.0, ("HP:0001250",), (), (), Path(f"{patient_id}.json"), variants=variants)


def _cohort(n=300):
    diseases = _disease_genes(6)
    states = (("GENO:0000135",), ("GENO:0000136",), ("GENO:0000135", "GENO:0000135"))
    return [_record(f"PMID_{i}_P{i}", *diseases[i % len(diseases)], states=states[i % 3]) for i in range(n)]


def _rows(records, seed=0, **background):
    from modalities.phenopacket_store import (
        BACKGROUND_DEFAULTS,
        background_pools,
        patient_variant_rows,
    )
    from modalities.variants import VariantReader

    reader = VariantReader(from_phenopacket=True)
    labels = sorted({r.label for r in records})
    pools = background_pools(records, labels, reader)
    config = {**BACKGROUND_DEFAULTS, **background}
    return reader, pools, {r.patient_id: patient_variant_rows(r, reader, pools, config, seed) for r in records}


def test_background_rows_and_causative_rows_per_patient():
    records = _cohort(30)
    reader, _, out = _rows(records)
    gene = reader.columns.index("gene")
    for record in records:
        table, kinds = out[record.patient_id]
        assert table.shape == (len(kinds), len(reader.columns)) and table.shape[0] <= reader.max_variants
        assert kinds.count("causative") == len(record.variants)
        assert kinds.count("common") >= 20 and kinds.count("rare_benign") >= 8 and kinds.count("decoy") >= 2
        causative = {table[i, gene].item() for i, k in enumerate(kinds) if k == "causative"}
        assert causative == {float(reader._gene_position[record.variants[0].gene] + 1)}
        assert (table[:, reader.columns.index("valid")] == 1).all()


def test_decoys_never_sit_in_the_patients_own_disease_genes():
    from modalities.phenopacket_store import own_genes

    records = _cohort(120)
    reader, pools, out = _rows(records, decoys=[5, 8], decoy_label_gene_fraction=1.0)
    gene = reader.columns.index("gene")
    symbol = {i + 1: g for g, i in reader._gene_position.items()}
    in_label_genes = 0
    for record in records:
        own = own_genes(record, pools)
        assert record.variants[0].gene in own and pools.genes_of[record.label] <= own
        table, kinds = out[record.patient_id]
        decoys = {symbol[int(table[i, gene])] for i, k in enumerate(kinds) if k == "decoy"}
        assert decoys and not decoys & own
        assert decoys <= set(pools.disease_genes)
        in_label_genes += bool(decoys & set(pools.label_genes))
    assert in_label_genes == len(records)  # fraction 1.0: decoys in the other label diseases' genes


def test_variant_rows_are_deterministic_from_the_seed():
    records = _cohort(10)
    _, _, first = _rows(records, seed=4)
    _, _, again = _rows(list(reversed(records)), seed=4)  # order of the cohort does not matter
    _, _, other = _rows(records, seed=5)
    for record in records:
        assert torch.equal(first[record.patient_id][0], again[record.patient_id][0])
        assert first[record.patient_id][1] == again[record.patient_id][1]
    assert any(not torch.equal(first[r.patient_id][0], other[r.patient_id][0]) for r in records)


def test_missingness_and_annotation_do_not_tell_the_causative_row_from_the_decoys():
    records = _cohort(400)
    reader, pools, out = _rows(records)
    by_kind = {"causative": [], "decoy": []}
    for table, kinds in out.values():
        for i, kind in enumerate(kinds):
            if kind in by_kind:
                by_kind[kind].append(table[i])
    causative, decoy = (torch.stack(by_kind[k]) for k in ("causative", "decoy"))
    assert len(causative) >= 400 and len(decoy) >= 800
    column = {name: i for i, name in enumerate(reader.columns)}
    flags = ["af_missing"] + [f"{s}_missing" for s in reader.score_fields]
    for name in flags:
        a, b = causative[:, column[name]].mean().item(), decoy[:, column[name]].mean().item()
        assert abs(a - 0.3) < 0.06 and abs(b - 0.3) < 0.06 and abs(a - b) < 0.06, (name, a, b)
    for name in ["af_neglog10", *reader.score_fields]:  # the values where present: one distribution
        present_c = causative[causative[:, column[f"{name}_missing" if name != "af_neglog10" else "af_missing"]] == 0, column[name]]
        present_d = decoy[decoy[:, column[f"{name}_missing" if name != "af_neglog10" else "af_missing"]] == 0, column[name]]
        scale = present_d.std().item()
        assert abs(present_c.mean().item() - present_d.mean().item()) < 0.25 * scale, name
    for name in ("impact", "consequence"):  # known for both kinds at the same rate (0 here), same impact levels
        assert (causative[:, column[name]] > 0).all() and (decoy[:, column[name]] > 0).all()
    assert set(causative[:, column["impact"]].tolist()) == set(decoy[:, column["impact"]].tolist())
    hom = column["zygosity"]
    assert abs((causative[:, hom] == 2).float().mean().item() - (decoy[:, hom] == 2).float().mean().item()) < 0.1
    assert abs(pools.hom_rate - 1 / 4) < 0.01  # the cohort: 1 hom row in every 4 causative rows


def test_every_row_may_miss_its_scores_alike():
    records = _cohort(20)
    reader, _, out = _rows(records, missing_rate=1.0, consequence_missing_rate=1.0)
    column = {name: i for i, name in enumerate(reader.columns)}
    for table, _ in out.values():
        assert (table[:, column["af_missing"]] == 1).all() and (table[:, column["af_neglog10"]] == 0).all()
        assert (table[:, column["consequence"]] == 0).all() and (table[:, column["impact"]] == 0).all()
        for score in reader.score_fields:
            assert (table[:, column[f"{score}_missing"]] == 1).all() and (table[:, column[score]] == 0).all()


def test_background_config_rejects_unknown_keys(store):
    with pytest.raises(ValueError, match="unknown data.variants.background"):
        load_phenopacket_store(store_cfg(store, num_sites=2, variants={"enabled": True, "background": {"n": [30, 60]}}), seed=0)


def test_variants_are_off_by_default_and_every_site_gets_them_when_on(store):
    plain = load_phenopacket_store(store_cfg(store, num_sites=2), seed=0)
    assert plain.modalities == ["phenotypes"]
    assert all("variants" not in item["inputs"] for s in plain.sites for item in s.splits["train"].items)

    with_variants = load_phenopacket_store(store_cfg(store, num_sites=2, variants={"enabled": True}), seed=0)
    assert with_variants.modalities == ["phenotypes", "variants"] and "variants" in with_variants.readers
    for site in with_variants.sites:
        assert site.modalities == ("phenotypes", "variants")
        for split in ("train", "val", "test"):
            for item in site.splits[split].items:
                assert item["inputs"]["variants"].shape[0] >= 30  # background only: these packets have no vcfRecord
    again = load_phenopacket_store(store_cfg(store, num_sites=2, variants={"enabled": True}), seed=0)
    first = {i["patient_id"]: i["inputs"]["variants"] for s in with_variants.sites for i in s.splits["train"].items}
    second = {i["patient_id"]: i["inputs"]["variants"] for s in again.sites for i in s.splits["train"].items}
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_every_site_gets_a_quality_report_without_patient_ids(store):
    consortium = load_phenopacket_store(store_cfg(store, num_sites=2), seed=0)

    reports = consortium.quality
    assert {s.name for s in consortium.sites} <= set(reports)
    for site in consortium.sites:
        report = reports[site.name]
        assert report["n_patients"] == sum(len(split) for split in site.splits.values())
        assert "phenopackets_same_content" in report["duplicates"]
        text = json.dumps(report)
        assert not any(pid in text for split in site.splits.values() for pid in split.patient_ids)
    assert "repairs" in reports["all_sites"]
