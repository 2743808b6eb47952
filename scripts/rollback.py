"""Restore a registry version as a run's current model, or take a leaving site's contributions out.

    python scripts/rollback.py run_dir=outputs/runs/<date_time> version=3 [reason="site x sent corrupted labs"]
    python scripts/rollback.py run_dir=outputs/runs/<date_time> exit_site=genomics_lab [reason=...]

The version's file must match its model card; the ledger must exist and verify.
Both the restore and the exit are recorded in the ledger.
"""
from __future__ import annotations

import sys

from federation.governance.cli import parse_args
from federation.governance.exit import exit_site
from federation.governance.ledger import LedgerError
from federation.governance.registry import RegistryError
from federation.governance.rollback import rollback


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, ["run_dir"], __doc__)
    reason = args.get("reason", "")
    try:
        if args.get("exit_site"):
            plan = exit_site(args["run_dir"], args["exit_site"], reason)
            print(f"site {plan.site!r} left ({plan.mode}): version {plan.version} is the latest without its contributions and is now current")
            if plan.mode == "retrain":
                print(f"retrain: start a new run from registry version {plan.version} without {plan.site!r}")
        elif args.get("version"):
            if not args["version"].isdigit():
                print(f"version must be a registry version number, got {args['version']!r}", file=sys.stderr)
                return 2
            entry = rollback(args["run_dir"], int(args["version"]), reason)
            print(f"version {args['version']} restored as the run's current model (ledger entry {entry['seq']}, {entry['hash']})")
        else:
            print(f"give version=N or exit_site=NAME\n{__doc__}", file=sys.stderr)
            return 2
    except (LedgerError, RegistryError) as err:
        print(f"refused: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
