"""benchmarks/strategies.py --only: re-measured rows replace their old lines, the others stay."""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "strategies.py"
spec = importlib.util.spec_from_file_location("strategies_benchmark", SCRIPT)
strategies = importlib.util.module_from_spec(spec)
spec.loader.exec_module(strategies)

HEADER = "| run | accuracy (overall) | - | wall s |\n| --- | --- | --- | --- |\n"


def test_only_rows_replace_their_lines_and_keep_the_rest_in_suite_order():
    # Prepare: a results file from an earlier full run, and a re-measured and a new row
    previous = "## title\n\nnote\n\n" + HEADER + "| a | 0.100 |  | 1 |\n| b, no attacker | 0.200 |  | 2 |\n| gone | 0.9 |  | 9 |\n"
    fresh = HEADER + "| new | 0.400 |  | 4 |\n| b, no attacker | 0.300 |  | 3 |\n"

    # Execute
    merged = strategies.merge_rows(previous, fresh, ["a", "new", "b, no attacker"])

    # Assert: suite order, b re-measured, a kept, a label no longer in the suite dropped
    assert merged == HEADER + "| a | 0.100 |  | 1 |\n| new | 0.400 |  | 4 |\n| b, no attacker | 0.300 |  | 3 |\n"
