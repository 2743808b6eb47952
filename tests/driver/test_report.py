"""The summary every experiment writes: named metrics, mean over sites, mean and sd over seeds."""
import math

import torch

from federation.driver.report import build_summary, combine_seeds, markdown_table


def _predictions(correct_a: int, correct_b: int) -> dict:
    """Site a: 4 test patients, site b: 2; the first `correct_*` predicted right."""
    def site(n, correct):
        labels = torch.arange(n) % 2
        predicted = torch.where(torch.arange(n) < correct, labels, 1 - labels)
        return torch.nn.functional.one_hot(predicted, 2).float() * 5, labels

    return {"federated": {"a": site(4, correct_a), "b": site(2, correct_b)}, "local": {"a": site(4, 0), "b": site(2, 0)}}


def test_summary_renames_metrics_and_averages_over_sites_unweighted():
    summary = build_summary("t", _predictions(4, 1), {"a": 10, "b": 3}, {"acc": "accuracy"})

    assert summary["metric_names"] == ["acc"]
    assert summary["sites"]["a"]["federated"] == {"acc": 1.0}
    assert summary["mean_over_sites"]["federated"]["acc"] == (1.0 + 0.5) / 2
    assert math.isclose(summary["overall"]["federated"]["acc"], 5 / 6, rel_tol=1e-6)


def test_combine_seeds_gives_mean_and_sd():
    one = build_summary("t", _predictions(4, 2), {"a": 10, "b": 3}, {"acc": "accuracy"})
    two = build_summary("t", _predictions(2, 2), {"a": 10, "b": 3}, {"acc": "accuracy"})

    combined = combine_seeds([one, two], [0, 1])

    assert combined["seeds"] == [0, 1]
    assert combined["sites"]["a"]["federated"]["acc"] == 0.75
    assert combined["mean_over_sites"]["federated"]["acc"] == (0.75 + 1.0) / 2
    assert math.isclose(combined["sd"]["mean_over_sites"]["federated"]["acc"], 0.25 / math.sqrt(2), rel_tol=1e-6)  # sd of 1.0 and 0.75
    assert "±" in markdown_table(combined)


def test_markdown_table_prints_a_reference_beside_our_numbers():
    summary = build_summary("t", _predictions(4, 1), {"a": 10, "b": 3}, {"accuracy": "accuracy"})
    reference = {"label": "Paper", "metric": "accuracy", "note": "published", "mean_over_sites": {"federated": 0.685},
                 "sites": {"a": {"local": 0.722}}}

    table = markdown_table(summary, reference=reference)

    lines = table.splitlines()
    assert lines[0].endswith("| accuracy local (Paper) | accuracy federated (Paper) |")
    assert lines[2].startswith("| a |") and lines[2].endswith("| 0.722 |  |")
    assert "| **mean over sites** |" in lines[4] and lines[4].endswith("|  | 0.685 |")
    assert "Paper: published" in table
    assert markdown_table(summary) == markdown_table(summary, reference=None)


def test_combine_seeds_gives_each_sites_sd_too():
    one = build_summary("t", _predictions(4, 2), {"a": 10, "b": 3}, {"acc": "accuracy"})
    two = build_summary("t", _predictions(2, 2), {"a": 10, "b": 3}, {"acc": "accuracy"})

    combined = combine_seeds([one, two], [0, 1])

    assert math.isclose(combined["sd"]["sites"]["a"]["federated"]["acc"], 0.5 / math.sqrt(2), rel_tol=1e-6)  # sd of 1.0 and 0.5
    assert "| a | 10 | 4 | 0.000 ± 0.000 | 0.750 ± 0.354 |" in markdown_table(combined)
