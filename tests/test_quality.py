"""Small counts in the shared quality report cannot be read back from the rest."""
from modalities.quality import suppress_small


def test_counts_under_k_are_hidden_and_zero_or_large_counts_shown():
    shown = suppress_small({"a": 12, "b": 3, "c": 0, "d": 2}, min_count=5)

    assert shown == {"a": 12, "b": "<5", "c": 0, "d": "<5"}


def test_a_single_hidden_cell_hides_a_second_so_the_total_does_not_reveal_it():
    counts = {"a": 12, "b": 3, "c": 7}

    shown = suppress_small(counts, min_count=5)

    hidden = [k for k, v in shown.items() if not isinstance(v, int)]
    assert len(hidden) == 2 and "b" in hidden
    assert shown["a"] == 12  # the smallest other cell (c) is the one hidden
