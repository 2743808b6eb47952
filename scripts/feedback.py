"""Record, at a site, a case the model got wrong: it joins the site's validation set from the next run on.

    python scripts/feedback.py run_dir=outputs/runs/<date_time> site_dir=data/synthetic/seed_0/rural_clinic \
        case=rural_clinic-0042 answer=OMIM:300672 diagnosis=OMIM:312750 comment="MECP2 variant confirmed"

The case must have a phenopacket at the site and both diagnoses must be in the label
space of the run's model. The entry goes to `<site_dir>/feedback.jsonl` and stays there.
Everything is checked before the file is written. Exit status 2: an argument refused (a run or
site folder that does not exist); 1: the model, the site's files or the entry refused
(federation/entrypoint.py).
"""
from __future__ import annotations

import sys

from federation.entrypoint import script
from federation.governance.cli import parse_args
from federation.governance.feedback import record_feedback, run_labels
from federation.settings import existing


@script
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, ["run_dir", "site_dir", "case", "answer", "diagnosis"], __doc__)
    existing("run_dir", args["run_dir"], folder=True)
    existing("site_dir", args["site_dir"], folder=True)
    entry = record_feedback(args["site_dir"], args["case"], args["answer"], args["diagnosis"], args.get("comment", ""), run_labels(args["run_dir"]))
    print(f"recorded: case {entry.case_id}, model said {entry.model_answer}, confirmed {entry.confirmed_diagnosis}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
