"""Issue 9 item 1's benchmark: `data.shards` (N sites cut from a cohort's sites), its table and run_all's --update."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from support import ROOT, compose_config

from federation.flower.plan import consortium_plan, own_site_data
from modalities.consortium import load_consortium

sys.path.insert(0, str(ROOT / "benchmarks"))
import perf_simulation  # noqa: E402
import run_all  # noqa: E402

SITES = {"north": 40, "south": 31, "east": 12}


@pytest.fixture(scope="module")
def table_root(tmp_path_factory) -> Path:
    """Heart-disease-format files, one per site, of different sizes."""
    root, rng = tmp_path_factory.mktemp("tables"), np.random.default_rng(0)
    for site, rows in SITES.items():
        lines = [",".join(f"{v:.1f}" for v in [rng.uniform(30, 75), rng.integers(0, 2), rng.integers(1, 5), 130, 240,
                                              rng.integers(0, 2), rng.integers(0, 3), 150, rng.integers(0, 2), rng.uniform(0, 4)])
                 + f",?,?,?,{i % 3}" for i in range(rows)]
        (root / f"{site}.data").write_text("\n".join(lines) + "\n")
    return root


def heart_like(root: Path, *extra: str) -> list[str]:
    entries = ",".join(f"{{name: {s}, path: {s}.data}}" for s in SITES)
    return ["experiment=heart_flamby", f"data.root={root}", f"data.sites=[{entries}]", *extra]


def test_shards_are_disjoint_stratified_and_cover_every_site(table_root):
    # Prepare
    whole = load_consortium(compose_config(heart_like(table_root)).data, seed=0)

    # Execute
    cut = load_consortium(compose_config(heart_like(table_root, "+data.shards=7")).data, seed=0)

    # Assert: 7 sites in all, the first declared sites get the remainder, each a part of its parent
    assert [s.name for s in cut.sites] == ["north_0", "north_1", "north_2", "south_0", "south_1", "east_0", "east_1"]
    for parent in whole.sites:
        shards = [s for s in cut.sites if cut.quality[s.name]["shard_of"] == parent.name]
        for split, dataset in parent.splits.items():
            ids = [pid for s in shards for pid in s.splits[split].patient_ids]
            assert sorted(ids) == sorted(dataset.patient_ids) and len(set(ids)) == len(ids)  # disjoint, covering
            if len(dataset):
                assert all(len(s.splits[split]) for s in shards)  # every shard trains and tests
            for label in set(dataset.labels):
                counts = [Counter(s.splits[split].labels)[label] for s in shards]
                assert max(counts) - min(counts) <= 1  # stratified by label within the split
    rows = {item["patient_id"]: item["inputs"]["tabular"] for s in whole.sites for d in s.splits.values() for item in d.items}
    assert all(torch.equal(rows[item["patient_id"]], item["inputs"]["tabular"])  # the parent's normalisation is kept
               for s in cut.sites for d in s.splits.values() for item in d.items)


def test_a_site_narrowed_to_its_shard_loads_the_records_simulation_gives_it(table_root):
    # Prepare
    data = compose_config(heart_like(table_root, "+data.shards=5")).data
    everyone = load_consortium(data, seed=0)
    plan = consortium_plan(data)

    # Execute
    alone = {site: load_consortium(own_site_data(data, site), seed=0).sites[0] for site in plan.sites}

    # Assert: the config-only plan names the loaded sites, and each deployed shard reads its own records
    assert list(plan.sites) == [s.name for s in everyone.sites]
    for site in everyone.sites:
        assert alone[site.name].name == site.name
        for split, dataset in site.splits.items():
            assert alone[site.name].splits[split].patient_ids == dataset.patient_ids


def test_fewer_shards_than_sites_is_refused(table_root):
    with pytest.raises(ValueError, match="fewer than the 3 declared sites"):
        load_consortium(compose_config(heart_like(table_root, "+data.shards=2")).data, seed=0)


def test_the_benchmark_overrides_compose_a_consortium_of_n_sites():
    cfg = perf_simulation.settings()

    data = compose_config(perf_simulation.overrides(cfg, 50, Path("/nowhere"))).data

    assert len(consortium_plan(data).sites) == 50 and data.loader == "modalities.tables.load_table_sites"


def row(sites: int, ours: float, theirs: float | None, whole=(2.0, 40.0)) -> perf_simulation.Row:
    flower = None if theirs is None else perf_simulation.Measured(whole[1], 10.0, theirs)
    return perf_simulation.Row(sites, perf_simulation.Measured(whole[0], 0.5, ours), flower, "" if flower else "failed: x")


def test_the_table_flags_accuracies_that_disagree_and_judges_the_target():
    cfg = OmegaConf.merge(perf_simulation.settings(), {"accuracy_tolerance": 0.005, "target": {"sites": 10, "speedup": 10}})

    same = perf_simulation.table([row(10, 0.580, 0.582), row(50, 0.6, 0.7)], cfg)
    differs = perf_simulation.table([row(10, 0.580, 0.590)], cfg)
    slow = perf_simulation.table([row(10, 0.580, 0.580, whole=(5.0, 40.0))], cfg)
    missing = perf_simulation.table([row(10, 0.580, None)], cfg)

    assert "| 10 | 2.0 | 40.0 | 20.0x | 0.50 | 10.00 | 20.0x | 0.580 | 0.582 | yes |" in same
    assert "| 50 |" in same and "| **no** |" in same and "**met** (20.0x whole run" in same
    assert "| **no** |" in differs and "**not met**" in differs and "accuracy differs" in differs
    assert "**not met** (8.0x whole run" in slow
    assert "not measured (failed: x)" in missing


def test_update_replaces_only_the_measured_section():
    document = "# Performance\n\nheader\n\n## 1. old one\n\nold\n\n## 2. Aggregation\n\nkept\n"

    replaced = run_all.replace_sections(document, {"simulation": "## 1. Simulation\n\nnew\n"})
    added = run_all.replace_sections("# Performance\n", {"sweep": "## 7. Sweeps\n\nnew\n"})

    assert replaced == "# Performance\n\nheader\n\n## 1. Simulation\n\nnew\n\n## 2. Aggregation\n\nkept\n"
    assert run_all.replace_sections(document + "\n## 3. Site\n", {"aggregation": "## 2. A\n"}).endswith("## 2. A\n\n## 3. Site\n")
    assert added == "# Performance\n\n## 7. Sweeps\n\nnew\n"
