"""A labelled variant table as a consortium of labs: column mapping, labs, held-out genes, missing values, bad input."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from support import compose_config

from modalities.base import DataError
from modalities.consortium import load_consortium
from modalities.variant_features import MISSING_SUFFIX
from modalities.variant_labs import deal_groups

# Another lab's export of the same form: other column names, other label words.
RENAME = {
    "Gene": "genename", "Chromosome": "hg19_chr", "Position": "hg19_pos(1-based)", "Ref": "ref", "Alt": "alt",
    "Classification": "clnsig", "gnomad_af": "MAF", "sift": "SIFT_score", "fathmm": "FATHMM_score",
    "vest": "VEST4_score", "revel": "REVEL_score", "gerp": "GERP++_RS", "phylop": "phyloP100way_vertebrate",
    "ea": "EA_1.0", "bayesdel": "BayesDel_nsfp33a_noAF", "mutpred": "MutPred2.0_score", "cadd": "CADDv1.6_PHRED",
    "polyphen": "pph2_prob", "mpc": "MPC_score", "primateai": "PrimateAI_score",
}
LABELS = {"P": "pathogenic", "LP": "pathogenic", "B": "benign", "LB": "benign"}
LOW = {"sift", "fathmm"}  # lower is more damaging
SPARSE = {"sift", "mpc"}  # often missing


def write_variant_table(tmp_path: Path, n_genes: int = 30, per_gene: int = 8, seed: int = 0, name: str = "lab_export.tsv") -> Path:
    """A small table in which every score carries some signal, a few are often missing ('.'), MAF is rarer for pathogenic."""
    rng = np.random.default_rng(seed)
    scores = [c for c in RENAME if c not in ("Gene", "Chromosome", "Position", "Ref", "Alt", "Classification", "gnomad_af")]
    lines = ["\t".join(RENAME)]
    for g in range(n_genes):
        for k in range(per_gene):
            y = int(rng.random() < 0.5)
            label = rng.choice(["P", "LP"] if y else ["B", "LB"])
            af = 0.0 if y and rng.random() < 0.8 else float(rng.uniform(0, 0.01))
            values = [(-1 if c in LOW else 1) * (y + rng.normal(0, 0.9)) for c in scores]
            cells = ["." if c in SPARSE and rng.random() < 0.3 else f"{v:.4f}" for c, v in zip(scores, values)]
            locus = [f"G{g:02d}", str(1 + g % 3), str(1000 + 10 * g + k), "A", "G"]
            lines.append("\t".join(locus + [str(label), f"{af:.6f}"] + cells))
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def variant_cfg(path: Path, *overrides: str):
    """experiment=vus's data config pointed at `path` through the column mapping."""
    cfg = compose_config(["experiment=vus", *overrides])
    cfg.data.path = str(path)
    cfg.data.rename = RENAME
    cfg.data.label_mapping = LABELS
    return cfg


def genes(site, split: str) -> set[str]:
    return {item["meta"]["gene"] for item in site.splits[split].items}


def test_another_table_loads_through_a_column_mapping_with_held_out_genes(tmp_path):
    cfg = variant_cfg(write_variant_table(tmp_path), "data.labs.shares=[0.6,0.4]")

    consortium = load_consortium(cfg.data, seed=0)

    assert [s.name for s in consortium.sites] == ["lab_1", "lab_2"]
    assert sum(len(split) for s in consortium.sites for split in s.splits.values()) == 240  # no row dropped
    lab_genes = [set().union(*(genes(s, k) for k in ("train", "val", "test"))) for s in consortium.sites]
    assert not lab_genes[0] & lab_genes[1]
    trained = set().union(*(genes(s, "train") for s in consortium.sites))
    held_out = set().union(*(genes(s, "test") | genes(s, "val") for s in consortium.sites))
    assert held_out and not trained & held_out
    assert all(len(s.splits["test"]) and len(s.splits["val"]) for s in consortium.sites)
    assert consortium.sites[0].splits["train"][0]["inputs"]["tabular"].shape == (28,)


def test_missing_scores_become_indicators_not_dropped_rows(tmp_path):
    consortium = load_consortium(variant_cfg(write_variant_table(tmp_path)).data, seed=0)
    names = consortium.readers["tabular"].encoding.names
    sift, flag = names.index("SIFT"), names.index("SIFT" + MISSING_SUFFIX)

    items = [item for s in consortium.sites for split in s.splits.values() for item in split.items]
    gaps = [item for item in items if np.isnan(item["meta"]["raw"][1])]

    assert 0 < len(gaps) < len(items)
    assert all(item["inputs"]["tabular"][flag] == 1 and item["inputs"]["tabular"][sift] == 0 for item in gaps)
    assert all(item["inputs"]["tabular"][flag] == 0 for item in items if not np.isnan(item["meta"]["raw"][1]))


def test_the_encoding_from_lab_aggregates_equals_the_pooled_training_statistics(tmp_path):
    consortium = load_consortium(variant_cfg(write_variant_table(tmp_path)).data, seed=0)
    encoding = consortium.readers["tabular"].encoding
    raw = np.stack([item["meta"]["raw"] for s in consortium.sites for item in s.splits["train"].items])
    raw[:, 0] = -np.log10(np.maximum(raw[:, 0], 1e-6))  # MAF's transform

    assert encoding.mean == pytest.approx(np.nanmean(raw, axis=0))
    assert encoding.sd == pytest.approx(np.nanstd(raw, axis=0, ddof=1))


def test_labs_by_chromosome_keep_each_chromosome_at_one_lab(tmp_path):
    cfg = variant_cfg(write_variant_table(tmp_path), "data.labs.by=chromosome", "data.labs.shares=[0.5,0.5]")

    consortium = load_consortium(cfg.data, seed=0)

    chromosomes = [{item["patient_id"].split("/")[1].split(":")[0] for split in s.splits.values() for item in split.items} for s in consortium.sites]
    assert len(consortium.sites) == 2 and not chromosomes[0] & chromosomes[1]


def test_labs_from_a_column(tmp_path):
    path = write_variant_table(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + "\tsubmitter"] + [line + f"\t{'north' if i % 2 else 'south'}" for i, line in enumerate(lines[1:])]) + "\n")
    cfg = variant_cfg(path, "data.labs.by=column", "data.labs.column=submitter")

    consortium = load_consortium(cfg.data, seed=0)

    assert [s.name for s in consortium.sites] == ["north", "south"]
    trained = set().union(*(genes(s, "train") for s in consortium.sites))
    assert not trained & set().union(*(genes(s, "test") for s in consortium.sites))  # a gene at both labs is held out at both


def test_a_missing_configured_column_is_named(tmp_path):
    cfg = variant_cfg(write_variant_table(tmp_path))
    cfg.data.rename = {k: v for k, v in RENAME.items() if k != "revel"}

    with pytest.raises(DataError) as err:
        load_consortium(cfg.data, seed=0)

    assert err.value.field == "REVEL_score" and "no column" in err.value.reason


def test_a_label_outside_the_mapping_names_row_and_field(tmp_path):
    path = write_variant_table(tmp_path)
    lines = path.read_text().splitlines()
    lines[5] = lines[5].replace("\tLP\t", "\tVUS\t").replace("\tLB\t", "\tVUS\t").replace("\tP\t", "\tVUS\t").replace("\tB\t", "\tVUS\t")
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(DataError) as err:
        load_consortium(variant_cfg(path).data, seed=0)

    assert err.value.record == "row 6" and err.value.field == "clnsig" and "'VUS'" in err.value.reason


def test_a_mapping_onto_an_unconfigured_label_is_refused(tmp_path):
    cfg = variant_cfg(write_variant_table(tmp_path))
    cfg.data.label_mapping = {**LABELS, "VUS": "uncertain"}

    with pytest.raises(ValueError, match="uncertain"):
        load_consortium(cfg.data, seed=0)


def test_a_score_that_is_not_a_number_names_row_and_column(tmp_path):
    path = write_variant_table(tmp_path)
    lines = path.read_text().splitlines()
    cells = lines[3].split("\t")
    cells[list(RENAME).index("revel")] = "damaging"
    lines[3] = "\t".join(cells)
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(DataError) as err:
        load_consortium(variant_cfg(path).data, seed=0)

    assert err.value.record == "row 4" and err.value.field == "REVEL_score"


def test_the_declared_width_must_match_the_features(tmp_path):
    with pytest.raises(ValueError, match="n_features=28"):
        load_consortium(variant_cfg(write_variant_table(tmp_path), "data.n_features=30").data, seed=0)


def test_deal_groups_keeps_groups_whole_follows_shares_and_the_seed():
    rng = np.random.default_rng(0)
    groups = [f"g{int(i)}" for i in rng.integers(0, 200, 3000)]

    bins = deal_groups(groups, [0.5, 0.3, 0.2], seed=1)

    assert all(len({b for g, b in zip(groups, bins) if g == name}) == 1 for name in set(groups))
    share = np.bincount(bins) / len(bins)
    assert share == pytest.approx([0.5, 0.3, 0.2], abs=0.03)
    assert deal_groups(groups, [0.5, 0.3, 0.2], seed=1) == bins != deal_groups(groups, [0.5, 0.3, 0.2], seed=2)


def test_deal_groups_fills_every_part_or_says_why():
    assert Counter(deal_groups(["a", "b", "c"], [0.98, 0.01, 0.01], seed=0)) == Counter({0: 1, 1: 1, 2: 1})
    with pytest.raises(ValueError, match="2 groups cannot fill 3"):
        deal_groups(["a", "b"], [1, 1, 1], seed=0)
