"""Check a governance ledger: every entry unedited, in order, none deleted, the last line complete.

    python scripts/verify_ledger.py outputs/runs/<date_time>/ledger.jsonl

Exit status 0 and the head hash when the chain holds; 1 and the first bad line otherwise
(an empty file, which no run writes, is refused too); 2 when the path is missing or not a
regular file (federation/entrypoint.py).
"""
from __future__ import annotations

import argparse
import sys

from federation.entrypoint import script
from federation.governance.ledger import read_ledger
from federation.settings import existing


@script
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the ledger (JSON Lines), with its .head file beside it")
    args = parser.parse_args(argv)
    entries = read_ledger(existing("path", args.path, folder=False))
    print(f"ledger valid: {len(entries)} entries, head {entries[-1]['hash']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
