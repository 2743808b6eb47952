"""The shared quality report: small counts cannot be read back from the rest; every loader fills it, without ids."""
import json
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image
from support import compose_config

from federation.driver.experiment import run_experiment
from modalities.consortium import load_consortium
from modalities.image_sites import load_image_folder_sites, load_npz_sites
from modalities.quality import suppress_small
from modalities.tables import load_table_sites


def test_counts_under_k_are_hidden_and_zero_or_large_counts_shown():
    shown = suppress_small({"a": 12, "b": 3, "c": 0, "d": 2}, min_count=5)

    assert shown == {"a": 12, "b": "<5", "c": 0, "d": "<5"}


def test_a_single_hidden_cell_hides_a_second_so_the_total_does_not_reveal_it():
    counts = {"a": 12, "b": 3, "c": 7}

    shown = suppress_small(counts, min_count=5)

    hidden = [k for k, v in shown.items() if not isinstance(v, int)]
    assert len(hidden) == 2 and "b" in hidden
    assert shown["a"] == 12  # the smallest other cell (c) is the one hidden


# ---------------------------------------------------------------- sites cut from a table or an image archive

CONF = Path(__file__).resolve().parents[2] / "conf"
TABLE = {
    "missing_values": ["?"], "missing": "drop_rows", "id_column": "pid", "label": {"column": "num", "above": 0},
    "numeric": ["age", "chol"], "categorical": {"cp": [1, 2, 3]},
}


def _table_site(tmp_path: Path) -> OmegaConf:
    # 12 rows: ids 'secret-NN', 3 with chol missing (dropped), one row repeated, 2 positives among the kept rows
    rows = [f"secret-{i:02d},{40 + i},{'?' if i in (3, 6, 9) else 200 + i},{1 + i % 3}{'.0' if i == 1 else ''},{2 if i in (0, 1) else 0}"
            for i in range(11)]
    rows.append("secret-11,70,210,2,0")
    rows.append("secret-12,70,210,2,0")  # same content as the row before, another id
    (tmp_path / "a.csv").write_text("pid,age,chol,cp,num\n" + "\n".join(rows) + "\n")
    split = {"method": "draw", "fractions": {"train": 0.5, "val": 0.0, "test": 0.5}}
    return OmegaConf.create({"root": str(tmp_path), "table": TABLE, "split": split, "sites": [{"name": "a", "path": "a.csv"}],
                             "quality": {"min_count": 3}})


def test_a_table_sites_report_counts_rows_drops_missing_duplicates_and_hides_small_labels(tmp_path):
    consortium = load_table_sites(_table_site(tmp_path), seed=0)

    report = consortium.quality["a"]
    fields = report["fields"]["tabular"]
    assert (fields["rows_read"], fields["rows_kept"], fields["rows_dropped_missing"]) == (13, 10, 3)
    assert fields["rows_dropped_by_column"] == {"chol": 3}
    assert fields["missing_share"]["chol"] == round(3 / 13, 4) and fields["missing_share"]["age"] == 0.0
    assert report["n_patients"] == sum(report["splits"].values()) == 10
    assert report["min_count"] == 3 and report["labels"]["1"] == "<3"  # 2 positives
    assert report["duplicates"] == {"duplicate_rows": 1, "repeated_ids": 0}
    assert report["repairs"]["tabular"]["category_level_renamed"] == {"count": 1, "details": {"cp": 1}}  # '2.0' read as 2
    assert "secret" not in json.dumps(report)


def _npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in {"train": 20, "val": 6, "test": 10}.items():
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(n, 10, 10, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array([1 if i < 2 else 0 for i in range(n)])  # 2 images of class 1 per split
    arrays["test_images"][0] = arrays["train_images"][5]  # the same picture in train and test
    np.savez(path, **arrays)
    return path


def test_an_npz_sites_report_counts_splits_conversions_resizes_and_identical_pixels(tmp_path):
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "data" / "breastmnist.yaml"),
                          {"path": str(_npz(tmp_path / "a.npz")), "num_sites": 1, "partition": {"scheme": "iid"}, "image_size": [8, 8]})
    consortium = load_npz_sites(OmegaConf.create({"data": cfg}).data, seed=0)

    report = consortium.quality["site_0"]
    assert report["splits"] == {"train": 20, "val": 6, "test": 10} and report["n_patients"] == 36
    assert report["labels"] == {"0": 30, "1": 6}  # at k = 5 nothing is hidden ...
    assert report["repairs"]["imaging"] == {"rgb_to_grey": {"count": 36}, "resized": {"count": 36, "details": {"10x10 -> 8x8": 36}}}
    assert report["duplicates"] == {"identical_pixels": 1, "identical_pixels_across_splits": 1}
    assert "train_" not in json.dumps(report) and "test_" not in json.dumps(report)
    assert len(consortium.sites[0].splits["test"]) == 9  # the copy of a training picture is not scored (the same site counts too)
    copies = {"conflicting_labels": 1, "removed_from_evaluation_seen_in_training": 1}  # class 0 in train, class 1 in test
    assert consortium.quality["all_sites"] == {"duplicates": {"images": copies}}

    cfg.quality = {"min_count": 7}
    small = load_npz_sites(OmegaConf.create({"data": cfg}).data, seed=0).quality["site_0"]
    assert small["labels"]["1"] == "<7" and small["labels"]["0"] != 30  # ... at k = 7 the 6 is hidden, and the 30 with it


def _heart_like(root: Path) -> None:
    rng = np.random.default_rng(0)
    for f, name in enumerate(["processed.cleveland.data", "processed.hungarian.data", "processed.switzerland.data", "processed.va.data"]):
        rows = []
        for i in range(16 + 2 * f):
            values = [50 + i, i % 2, 1 + i % 4, 120, "?" if i == 0 else 200 + i, 0, i % 3, 150, i % 2, round(float(rng.random()), 1), 2, 0, 3, i % 3]
            rows.append(",".join(str(v) for v in values))
        (root / name).write_text("\n".join(rows) + "\n")


def test_a_tiny_heart_flamby_run_writes_quality_json_for_every_site(tmp_path):
    _heart_like(tmp_path)
    cfg = compose_config([
        "experiment=heart_flamby", f"data.root={tmp_path}", "seeds=[0]", "federation.rounds=1", "federation.local_steps=1",
        "baselines.epochs=1", "progress=false", "data.quality.min_count=4"])

    run_experiment(cfg, tmp_path / "run")

    quality = json.loads((tmp_path / "run" / "quality.json").read_text())
    assert set(quality) == {"cleveland", "hungary", "switzerland", "va"}
    for f, site in enumerate(["cleveland", "hungary", "switzerland", "va"]):
        report = quality[site]
        assert report["fields"]["tabular"]["rows_read"] == 16 + 2 * f
        assert report["fields"]["tabular"]["rows_dropped_missing"] == 1
        assert report["n_patients"] == 15 + 2 * f and report["min_count"] == 4


def test_an_image_folder_sites_report_counts_grey_conversions_and_identical_files(tmp_path):
    rows = ["file,label"]
    for i in range(12):
        pixels = np.full((6, 6), 10 * i, dtype=np.uint8)
        image = Image.fromarray(np.stack([pixels] * 3, -1) if i < 2 else pixels)  # two RGB files
        image.save(tmp_path / f"p{i:02d}.png")
        rows.append(f"p{i:02d}.png,{'rare' if i < 2 else 'common'}")
    (tmp_path / "p12.png").write_bytes((tmp_path / "p05.png").read_bytes())  # a copy
    rows.append("p12.png,common")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "data" / "image_folder.yaml"),
                          {"path": str(tmp_path), "num_sites": 1, "partition": {"scheme": "iid"},
                           "readers": {"imaging": {"spatial_dims": 2, "spatial_size": [6, 6]}}})

    report = load_image_folder_sites(cfg, seed=0).quality["site_0"]

    assert report["n_patients"] == 13 and report["labels"]["rare"] == "<5"
    assert report["repairs"]["imaging"] == {"rgb_to_grey": {"count": 2}}
    assert report["duplicates"]["identical_files"] == 1
    assert ".png" not in json.dumps(report)


# ---------------------------------------------------------------- data.shards keeps the consortium-wide counts


def _two_phenopacket_sites(root: Path, write_phenopacket) -> list[dict]:
    """Sites a and b of 4 training and 3 test patients each; b's test patient b4 is a's training patient a0 under another id."""
    entries = []
    for s, name in enumerate("ab"):
        splits = {f"{name}{i}": "train" if i < 4 else "test" for i in range(7)}
        for i, pid in enumerate(splits):
            age = "P1Y" if pid in ("a0", "b4") else f"P{10 * s + i + 2}Y"  # every other phenopacket its own content
            write_phenopacket(root / name / "phenopackets", pid, label=("OMIM:100100", "OMIM:200200")[i % 2], age=age)
        (root / name / "split.csv").write_text("patient_id,split\n" + "".join(f"{p},{split}\n" for p, split in splits.items()))
        entries.append({"name": name, "path": str(root / name), "modalities": ["phenotypes"]})
    return entries


def test_sharded_sites_keep_the_duplicates_counted_across_the_declared_sites(tmp_path, write_phenopacket):
    data = {"sites": _two_phenopacket_sites(tmp_path, write_phenopacket),
            "readers": {"phenotypes": {"_target_": "modalities.phenotypes.PhenotypeReader"}}}
    whole = load_consortium(OmegaConf.create(data), seed=0)

    cut = load_consortium(OmegaConf.create({**data, "shards": 4}), seed=0)

    assert whole.quality["all_sites"] == {"duplicates": {"same_content_at_several_sites": 1, "removed_from_evaluation_seen_in_training": 1}}
    assert cut.quality["all_sites"] == whole.quality["all_sites"]  # was dropped: quality.json rebuilt per shard
    assert set(cut.quality) == {"a_0", "a_1", "b_0", "b_1", "all_sites"}
    assert "b4" not in [pid for site in cut.sites for pid in site.splits["test"].patient_ids]
    assert sorted(pid for site in cut.sites for pid in site.splits["test"].patient_ids) == ["a4", "a5", "a6", "b5", "b6"]
