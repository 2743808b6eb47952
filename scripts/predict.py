"""Ranked differential diagnosis for one patient with a trained run's model, and what drove it.

    python scripts/predict.py outputs/runs/<date_time> site/phenopackets/p1.json [--vcf p1.vcf] [--output p1.json]

The patient's VCF, note, image and labs are found next to the phenopacket by the
site-folder layout (docs/site-folder.md) unless given explicitly.
With a diagnosis run (scripts/diagnose.py) it ranks every OMIM disease and names the
terms, gene and variant behind each one:

    python scripts/predict.py outputs/diagnosis/<date_time> p1.json [--vcf p1.vcf] --top-k 10

Every path given must exist: a missing run folder, phenopacket or --vcf/--note/--image/--labs
file is refused (exit status 2) rather than predicted without; a missing or damaged model
or a bad patient file is one line naming it (exit status 1; federation/entrypoint.py).
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings

from federation.entrypoint import script
from federation.predict import format_prediction, predict_patient, write_prediction
from federation.settings import ConfigError, existing
from federation.tasks.diagnosis.artefacts import is_diagnosis_run
from federation.tasks.diagnosis.predict import diagnose_patient, format_differential

FILES = (("variants", "--vcf"), ("notes", "--note"), ("imaging", "--image"), ("labs", "--labs"))


@script
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run folder with config.yaml and model.safetensors")
    parser.add_argument("phenopacket", help="the patient's phenopacket JSON")
    parser.add_argument("--site-dir", help="site folder (default: the folder above phenopackets/)")
    for modality, flag in FILES:
        parser.add_argument(flag, dest=modality, help=f"{modality} file for this patient")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--output", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    # Reading one patient out of a site folder: the other patients' files are expected, not news.
    logging.getLogger("modalities").setLevel(logging.ERROR)
    logging.getLogger("monai").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*NvImgCodecPydicomReader.*")
    files = _check_paths(args)
    result = _predict(args, files)
    if args.output:
        write_prediction(result, args.output)
    return 0


def _check_paths(args: argparse.Namespace) -> dict[str, str]:
    """Every path on the command line, before anything is read: a typo must not predict without that input."""
    existing("run_dir", args.run_dir, folder=True)
    existing("phenopacket", args.phenopacket, folder=False)
    if args.site_dir:
        existing("--site-dir", args.site_dir, folder=True)
    if args.top_k < 1:
        raise ConfigError("--top-k", args.top_k, "must be at least 1")
    files = {m: getattr(args, m) for m, _ in FILES if getattr(args, m)}
    for modality, flag in FILES:
        if modality in files:
            existing(flag, files[modality], folder=False)
    return files


def _predict(args: argparse.Namespace, files: dict) -> dict:
    if is_diagnosis_run(args.run_dir):
        result = diagnose_patient(args.run_dir, args.phenopacket, args.variants, args.top_k)
        print(format_differential(result))
    else:
        result = predict_patient(args.run_dir, args.phenopacket, args.site_dir, files, args.top_k)
        print(format_prediction(result))
    return result


if __name__ == "__main__":
    sys.exit(main())
