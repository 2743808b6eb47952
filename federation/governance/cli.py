"""`key=value` arguments for the governance scripts (the Hydra override syntax, without a Hydra run folder).

These scripts act on a finished run's folder; a Hydra job would create a run folder
of its own for each call. Values stay strings (a case id `0042` is not the number 42).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence


def parse_args(argv: Sequence[str] | None, required: Sequence[str], usage: str) -> dict[str, str]:
    """The arguments as {key: value}; exits with the usage (status 2) if one is malformed or missing."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        raise SystemExit(0)
    bad = [a for a in argv if "=" not in a or a.startswith("=")]
    args = dict(a.split("=", 1) for a in argv if a not in bad)
    missing = [k for k in required if not args.get(k)]
    if bad or missing:
        problem = f"not key=value: {bad}" if bad else f"missing: {', '.join(missing)}"
        print(f"{problem}\n{usage}", file=sys.stderr)
        raise SystemExit(2)
    return args
