"""Write a run's governance dashboard: one self-contained HTML file that opens from disk.

    python scripts/dashboard.py run_dir=outputs/runs/<date_time>
"""
from __future__ import annotations

import sys

from federation.governance import finish
from federation.governance.cli import parse_args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, ["run_dir"], __doc__)
    print(f"dashboard: {finish(args['run_dir'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
