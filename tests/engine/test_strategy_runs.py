"""The new federation options end to end through the main job on the tiny consortium."""
import csv

import pytest
from support import compose_config

from federation.driver.experiment import run_experiment


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.mark.slow
@pytest.mark.parametrize("federation", ["scaffold", "fedbn"])
def test_strategy_with_personalisation_partial_participation_and_an_imbalance_loss(federation, data_dir, tmp_path):
    cfg = compose_config([
        "experiment=smoke", f"paths.data_dir={data_dir}", "progress=false", f"federation={federation}",
        "federation.rounds=2", "federation.local_epochs=1", "federation.participation.fraction=0.6",
        "personalisation.enabled=true", "personalisation.epochs=1", "model/loss=logit_adjusted",
        "baselines.pooled=false",
    ])
    summary = run_experiment(cfg, tmp_path)

    assert list(summary["overall"]) == ["local", "federated", "personalised", "calibrated", "finetuned", "finetuned+calibrated", "local+calibrated", "deployed"]
    for site in summary["sites"].values():
        assert 0 <= site["personalised"]["accuracy"] <= 1
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    n_sites = len(summary["sites"])
    assert len(rows) == 2 * n_sites
    for round_ in ("1", "2"):
        statuses = [r["status"] for r in rows if r["round"] == round_]
        assert statuses.count("skipped") == n_sites - -(-3 * n_sites // 5)  # ceil(0.6 n) asked
        assert all(r["val_accuracy"] != "" for r in rows if r["round"] == round_)


@pytest.mark.slow
def test_update_compression_from_config_reports_what_each_site_sent(data_dir, tmp_path):
    def run(kind: str) -> dict:
        cfg = compose_config([
            "experiment=smoke", f"paths.data_dir={data_dir}", "progress=false", "federation.rounds=1",
            "federation.local_epochs=1", f"federation.compression={{kind: {kind}}}",
            "baselines.local=false", "baselines.pooled=false",
        ])
        return run_experiment(cfg, tmp_path / kind)["communication"]

    plain, int8 = run("none"), run("int8")

    assert int8["compression"] == {"kind": "int8"}
    assert plain["mean_bytes_per_update"].keys() == int8["mean_bytes_per_update"].keys() != set()
    for site, sent in int8["mean_bytes_per_update"].items():
        # one byte a value instead of four, plus a header and two scalars per key
        assert sent < 0.4 * plain["mean_bytes_per_update"][site]


@pytest.mark.slow
def test_torch_threads_and_concurrent_sites_from_config(data_dir, tmp_path):
    import torch

    before = torch.get_num_threads()
    cfg = compose_config([
        "experiment=smoke", f"paths.data_dir={data_dir}", "progress=false", "federation.rounds=1",
        "federation.local_epochs=1", "baselines.local=false", "baselines.pooled=false", "torch_threads=1",
        "federation.concurrent_sites=3",
    ])
    try:
        torch.set_num_threads(2)
        summary = run_experiment(cfg, tmp_path)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert {r["site"] for r in rows if r["status"] == "accepted"} == set(summary["sites"])
