"""Write a run's governance dashboard: one self-contained HTML file that opens from disk.

    python scripts/dashboard.py run_dir=outputs/runs/<date_time>

Exit status 2: no such run folder; 1: its ledger or registry refused (federation/entrypoint.py).
"""
from __future__ import annotations

import sys

from federation.entrypoint import script
from federation.governance import finish
from federation.governance.cli import parse_args
from federation.governance.rollback import check_run_dir


@script
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, ["run_dir"], __doc__)
    print(f"dashboard: {finish(check_run_dir(args['run_dir']))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
