"""Tabular sites: the table reader (one-hot, missing values, site column, bad input) and the heart loader."""
import json
import math
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from support import compose_config

from federation.driver.experiment import run_experiment
from modalities.base import DataError
from modalities.tables import feature_names, load_table_sites, read_table_site

ROOT = Path(__file__).resolve().parents[2]
HEART = Path(os.environ.get("RAREFED_SHARED_DATA", ROOT.parent / "shared" / "data")) / "heart"
HEART_FILES = {"cleveland": "processed.cleveland.data", "hungary": "processed.hungarian.data",
               "switzerland": "processed.switzerland.data", "va": "processed.va.data"}
needs_heart = pytest.mark.skipif(not all((HEART / f).is_file() for f in HEART_FILES.values()), reason="heart files not present")

TABLE = {
    "header": True,
    "missing_values": ["?"],
    "drop_columns": ["note"],
    "missing": "drop_rows",
    "id_column": "pid",
    "label": {"column": "num", "above": 0},
    "numeric": ["age", "chol"],
    "categorical": {"cp": [1, 2, 3]},
    "drop_first": False,
}
CSV = "pid,age,chol,cp,note,num\np1,63,233,1,x,0\np2,67,?,3,y,2\np3,41,204,2.0,z,1\n"


def write(tmp_path: Path, text: str = CSV, name: str = "site.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def data_cfg(tmp_path: Path, table: dict, sites=None, **extra) -> OmegaConf:
    cfg = {"root": str(tmp_path), "table": table, "split": {"method": "draw", "fractions": {"train": 0.5, "val": 0.0, "test": 0.5}}}
    if sites is not None:
        cfg["sites"] = sites
    return OmegaConf.create({**cfg, **extra})


def test_one_hot_over_the_configured_levels_and_drop_rows(tmp_path):
    features, labels, ids = read_table_site(write(tmp_path), TABLE)

    assert list(features.columns) == ["age", "chol", "cp=1", "cp=2", "cp=3"] == feature_names(TABLE)
    assert ids == ["p1", "p3"]  # p2 has a missing chol
    assert features.loc[:, ["cp=1", "cp=2", "cp=3"]].values.tolist() == [[1, 0, 0], [0, 1, 0]]
    assert labels.tolist() == ["0", "1"]


def test_drop_first_drops_the_first_configured_level_even_if_a_site_lacks_it(tmp_path):
    table = {**TABLE, "drop_first": True}
    path = write(tmp_path, "pid,age,chol,cp,note,num\np1,50,200,3,x,0\np2,51,201,2,x,1\n")

    features, _, _ = read_table_site(path, table)

    assert list(features.columns) == ["age", "chol", "cp=2", "cp=3"]
    assert features[["cp=2", "cp=3"]].values.tolist() == [[0, 1], [1, 0]]


def test_indicator_policy_keeps_rows_and_flags_missing_values(tmp_path):
    table = {**TABLE, "missing": "indicators"}

    features, _, ids = read_table_site(write(tmp_path), table)

    assert ids == ["p1", "p2", "p3"]
    assert features.loc[features.index[1], "chol"] == 0.0
    assert features["chol:missing"].tolist() == [0.0, 1.0, 0.0]
    assert list(features.columns) == feature_names(table)


def test_site_column_splits_one_file_into_sites_with_one_vocabulary(tmp_path):
    write(tmp_path, "pid,age,chol,cp,note,num,hospital\n" + "".join(
        f"p{i},{40 + i},{200 + i},{1 + i % 2},x,{i % 2},{'a' if i < 6 else 'b'}\n" for i in range(10)), "all.csv")
    cfg = data_cfg(tmp_path, {**TABLE, "site_column": "hospital"}, path="all.csv")

    consortium = load_table_sites(cfg, seed=0)

    assert [s.name for s in consortium.sites] == ["a", "b"]
    assert [sum(len(d) for d in s.splits.values()) for s in consortium.sites] == [6, 4]
    batch = consortium.readers["tabular"].collate([i["inputs"]["tabular"] for i in consortium.sites[1].splits["train"]])
    assert batch.shape == (len(consortium.sites[1].splits["train"]), 5)


def test_one_file_per_site_and_n_features_is_checked(tmp_path):
    write(tmp_path, CSV, "a.csv")
    write(tmp_path, CSV.replace("p1,63", "p1,70"), "b.csv")
    sites = [{"name": "a", "path": "a.csv"}, {"name": "b", "path": "b.csv"}]

    consortium = load_table_sites(data_cfg(tmp_path, TABLE, sites, n_features=5), seed=0)
    assert consortium.modalities == ["tabular"] and list(consortium.label_space) == ["0", "1"]
    with pytest.raises(ValueError, match="encodes 5 features"):
        load_table_sites(data_cfg(tmp_path, TABLE, sites, n_features=4), seed=0)


@pytest.mark.parametrize("text, table_change, field, record", [
    (None, {}, None, None),                                                   # file missing
    ("pid,age,chol,cp,note\np1,63,233,1,x\n", {}, "num", None),                # label column missing
    ("pid,age,chol,cp,note,num\np1,63,high,1,x,0\n", {}, "chol", "row 2"),    # non-numeric value
    ("pid,age,chol,cp,note,num\np1,63,233,1,x,0\np2,1,2,9,x,0\n", {}, "cp", "row 3"),  # unknown level
    ("pid,age,chol,cp,note,num\np1,63,?,1,x,0\n", {}, None, None),            # nothing left: empty site
])
def test_bad_input_is_a_data_error_naming_file_row_and_field(tmp_path, text, table_change, field, record):
    path = tmp_path / "site.csv" if text is None else write(tmp_path, text)

    with pytest.raises(DataError) as error:
        read_table_site(path, {**TABLE, **table_change})

    assert error.value.path == str(path)
    assert error.value.field == field
    assert error.value.record == record


def test_a_declared_site_without_rows_in_the_site_column_is_a_data_error(tmp_path):
    write(tmp_path, "pid,age,chol,cp,note,num,hospital\np1,63,233,1,x,0,a\n", "all.csv")
    cfg = data_cfg(tmp_path, {**TABLE, "site_column": "hospital"}, sites=["a", "b"], path="all.csv")

    with pytest.raises(DataError, match="site 'b' has no rows") as error:
        load_table_sites(cfg, seed=0)
    assert error.value.field == "hospital"



def test_heart_flamby_composes():
    cfg = compose_config(["experiment=heart_flamby", f"data.root={HEART}"])

    assert cfg.data.loader == "modalities.tables.load_table_sites"
    assert list(cfg.model.encoders) == ["tabular"] and cfg.model.embed_dim == cfg.data.n_features
    assert cfg.model.fusion._target_ == "models.fusion.SingleModalityFusion"
    assert len(cfg.seeds) == 5 and dict(cfg.report.metrics) == {"accuracy": "accuracy"}


def _raw_rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines() if line.strip()]


@needs_heart
def test_heart_loader_follows_flambys_row_counts_and_split_sizes():
    # Prepare: the protocol's arithmetic on the raw files (drop columns 10-12, then rows with '?')
    cfg = compose_config(["experiment=heart_flamby", f"data.root={HEART}"])
    expected = {}
    for site, name in HEART_FILES.items():
        rows = [[v for j, v in enumerate(r) if j not in (10, 11, 12)] for r in _raw_rows(HEART / name)]
        kept = [r for r in rows if "?" not in (v.strip() for v in r)]
        n_test = math.ceil(len(kept) * (1.0 - 0.66))
        expected[site] = (len(kept), len(kept) - n_test, n_test, sum(float(r[-1]) > 0 for r in kept))

    # Execute
    consortium = load_table_sites(cfg.data, seed=0)

    # Assert
    for site in consortium.sites:
        n, n_train, n_test, n_positive = expected[site.name]
        splits = site.splits
        assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (n_train, 0, n_test)
        assert sum(item["label"] for part in splits.values() for item in part) == n_positive
        train = torch.stack([item["inputs"]["tabular"] for item in splits["train"]])
        assert train.shape[1] == cfg.data.n_features == 13
        varying = train.std(0) > 0
        assert torch.allclose(train.mean(0), torch.zeros(13), atol=1e-4)  # z-scored with the site's own training rows
        assert torch.allclose(train.std(0)[varying], torch.ones(int(varying.sum())), atol=1e-3)


@needs_heart
def test_tiny_heart_flamby_run_reports_accuracy_for_the_four_centres(tmp_path):
    cfg = compose_config(["experiment=heart_flamby", f"data.root={HEART}", "seeds=[0]", "federation.rounds=2",
                    "federation.local_steps=3", "baselines.epochs=1", "progress=false"])

    run_experiment(cfg, tmp_path)

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["sites"]) == set(HEART_FILES)
    assert summary["metric_names"] == ["accuracy"]
    for approach in ("local", "federated", "pooled"):
        assert 0.0 <= summary["mean_over_sites"][approach]["accuracy"] <= 1.0
    assert "FLamby (published)" in (tmp_path / "summary.md").read_text()
