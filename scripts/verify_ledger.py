"""Check a governance ledger: every entry unedited, in order, none deleted, the last line complete.

    python scripts/verify_ledger.py outputs/runs/<date_time>/ledger.jsonl

Exit status 0 and the head hash when the chain holds; 1 and the first bad line otherwise.
"""
from __future__ import annotations

import argparse
import sys

from federation.governance.ledger import LedgerError, read_ledger


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the ledger (JSON Lines), with its .head file beside it")
    args = parser.parse_args(argv)
    try:
        entries = read_ledger(args.path)
    except LedgerError as err:
        print(f"ledger NOT valid: {err}", file=sys.stderr)
        return 1
    head = entries[-1]["hash"] if entries else "(empty)"
    print(f"ledger valid: {len(entries)} entries, head {head}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
