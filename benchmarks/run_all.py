"""Every performance figure of issue 9, measured side by side in one run on one machine: one markdown file.

    python benchmarks/run_all.py --quick     # small grids and short runs (minutes on a quiet 2-core machine)
    python benchmarks/run_all.py             # the full grids (about an hour on 2 cores)
    python benchmarks/run_all.py --only aggregation sweep --out /tmp/perf.md
    python benchmarks/run_all.py --only simulation --update   # re-measure section 1 in performance.md, keep the rest

Writes benchmarks/results/performance.md (unless --only is given without --out)
and prints it. Each section's figures are measured in this run, compared ones
interleaved; the header describes the machine. With --update only the measured
sections of the existing file are replaced, each with the date and load it was
measured at. Section 6 (concurrent sites on one device) measures CPU threads
where there is no GPU, and says so: its GPU figure needs a GPU machine.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import perf_aggregation  # the benchmarks' folder is on sys.path: this file runs as a script from it
import perf_communication
import perf_concurrent_sites
import perf_machine
import perf_notes_cache
import perf_simulation
import perf_site_training
import perf_sweep
import torch
from perf_common import ROOT

OUT = ROOT / "benchmarks" / "results" / "performance.md"

THREADS = """
In-process sections run torch with `--threads` intra-op threads (1 by default). On a
small machine shared with other jobs, a 2-thread torch loop spends its time waiting
for whichever thread another job preempted: the same local round measured 3 s and
33 s of CPU time minutes apart here. With one thread, CPU time counts the work done
and hardly the neighbours, so the CPU-time columns compare like with like.
"""

ITEMS: dict[str, Callable[..., str]] = {
    "simulation": perf_simulation.run,
    "aggregation": perf_aggregation.run,
    "site_training": perf_site_training.run,
    "communication": perf_communication.run,
    "notes_cache": perf_notes_cache.run,
    "gpu": perf_concurrent_sites.run,
    "sweep": perf_sweep.run,
}
ORDER = ["simulation", "aggregation", "site_training", "communication", "notes_cache", "gpu", "sweep"]
HEADING = re.compile(r"^## (\d+)\.", re.MULTILINE)


def section(name: str, quick: bool) -> str:
    started = time.perf_counter()
    text = ITEMS[name](quick)
    print(f"[{name}: {time.perf_counter() - started:.0f} s]", file=sys.stderr, flush=True)
    return text + f"\n_{name}: {time.perf_counter() - started:.0f} s, load average after: {perf_machine.load_average()}_\n"


def replace_sections(document: str, sections: dict[str, str]) -> str:
    """`document` with its sections `## <n>.` (n: the name's place in ORDER, from 1) replaced by the given texts.

    A section runs from its heading to the next `## ` heading; one the document lacks is added at the end.
    """
    for name, text in sections.items():
        number = ORDER.index(name) + 1
        starts = [m for m in HEADING.finditer(document) if int(m.group(1)) == number]
        if not starts:
            document = document.rstrip("\n") + "\n\n" + text
            continue
        start = starts[0].start()
        following = re.search(r"^## ", document[starts[0].end():], re.MULTILINE)
        end = starts[0].end() + following.start() if following else len(document)
        document = document[:start] + text.rstrip("\n") + "\n" + ("\n" if following else "") + document[end:]
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grids and short runs")
    parser.add_argument("--only", nargs="*", choices=list(ITEMS), help="measure only these sections")
    parser.add_argument("--update", action="store_true", help="replace only the measured sections of the existing output file")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the in-process sections (default 1, see THREADS)")
    parser.add_argument("--out", type=Path, help=f"markdown file to write (default {OUT.relative_to(ROOT)})")
    args = parser.parse_args()
    names = [n for n in ORDER if not args.only or n in args.only]
    torch.set_num_threads(args.threads)
    started = datetime.now(timezone.utc)
    if args.update:
        out = args.out or OUT
        command = f"`python benchmarks/run_all.py --only {' '.join(names)} --update{' --quick' if args.quick else ''}`"
        stamp = (f"\n_Measured separately, {started:%Y-%m-%d %H:%M} UTC ({'quick' if args.quick else 'full'}), with {command}; "
                 f"the machine as in the header, load average at the start: {perf_machine.load_average()}._\n")
        for name in names:  # each section is written as soon as it is measured: a later one failing loses nothing
            measured = section(name, args.quick) + stamp
            out.write_text(replace_sections(out.read_text(), {name: measured}))
            print(measured)
        return
    header = (f"# Performance ({'quick' if args.quick else 'full'} run, {started:%Y-%m-%d %H:%M} UTC)\n\n"
              f"`python benchmarks/run_all.py{' --quick' if args.quick else ''}`\n\n" + perf_machine.describe())
    text = header + THREADS + "".join("\n" + section(name, args.quick) for name in names)
    out = args.out or (None if args.only else OUT)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    print(text)

if __name__ == "__main__":
    main()
