"""Restore a registry version as a run's current model, or take a leaving site's contributions out.

    python scripts/rollback.py run_dir=outputs/runs/<date_time> version=3 [reason="site x sent corrupted labs"]
    python scripts/rollback.py run_dir=outputs/runs/<date_time> exit_site=genomics_lab [reason=...]

Everything is checked before anything is written: the run folder exists, the ledger exists
and verifies, the version exists and its file matches its model card, the leaving site is a
member (by the agreement or the ledger) that has not left already. Both the restore and the
exit are recorded in the ledger. Exit status 2: an argument refused; 1: the ledger, registry
or model refused (federation/entrypoint.py).
"""
from __future__ import annotations

import sys

from federation.entrypoint import script
from federation.governance.cli import parse_args
from federation.governance.exit import exit_site
from federation.governance.rollback import rollback
from federation.settings import ConfigError


@script
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, ["run_dir"], __doc__)
    reason = args.get("reason", "")
    if args.get("exit_site"):
        plan = exit_site(args["run_dir"], args["exit_site"], reason)
        print(f"site {plan.site!r} left ({plan.mode}): version {plan.version} is the latest without its contributions and is now current")
        if plan.mode == "retrain":
            print(f"retrain: start a new run from registry version {plan.version} without {plan.site!r}")
    elif args.get("version"):
        if not args["version"].isdigit():
            raise ConfigError("version", args["version"], "must be a registry version number")
        entry = rollback(args["run_dir"], int(args["version"]), reason)
        print(f"version {args['version']} restored as the run's current model (ledger entry {entry['seq']}, {entry['hash']})")
    else:
        print(f"give version=N or exit_site=NAME\n{__doc__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
