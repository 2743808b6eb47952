"""Ranked differential diagnosis for one patient with a trained run's model, and what drove it.

    python scripts/predict.py outputs/runs/<date_time> site/phenopackets/p1.json [--vcf p1.vcf] [--output p1.json]

The patient's VCF, note, image and labs are found next to the phenopacket by the
site-folder layout (docs/site-folder.md) unless given explicitly.
With a diagnosis run (scripts/diagnose.py) it ranks every OMIM disease and names the
terms, gene and variant behind each one:

    python scripts/predict.py outputs/diagnosis/<date_time> p1.json [--vcf p1.vcf] --top-k 10
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from federation.diagnosis.artefacts import is_diagnosis_run
from federation.diagnosis.predict import diagnose_patient, format_differential
from federation.predict import format_prediction, predict_patient, write_prediction
from modalities.base import DataError


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run folder with config.yaml and model.safetensors")
    parser.add_argument("phenopacket", help="the patient's phenopacket JSON")
    parser.add_argument("--site-dir", help="site folder (default: the folder above phenopackets/)")
    for modality, flag in (("variants", "--vcf"), ("notes", "--note"), ("imaging", "--image"), ("labs", "--labs")):
        parser.add_argument(flag, dest=modality, help=f"{modality} file for this patient")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--output", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    # Reading one patient out of a site folder: the other patients' files are expected, not news.
    logging.getLogger("modalities").setLevel(logging.ERROR)
    logging.getLogger("monai").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*NvImgCodecPydicomReader.*")
    files = {m: getattr(args, m) for m in ("variants", "notes", "imaging", "labs") if getattr(args, m)}
    try:
        result = _predict(args, files)
    except (DataError, ValueError, FileNotFoundError, KeyError) as error:
        if os.environ.get("RAREFED_FULL_ERROR") == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    if args.output:
        write_prediction(result, args.output)
    return result


def _predict(args: argparse.Namespace, files: dict) -> dict:
    if is_diagnosis_run(args.run_dir):
        result = diagnose_patient(args.run_dir, args.phenopacket, args.variants, args.top_k)
        print(format_differential(result))
    else:
        result = predict_patient(args.run_dir, args.phenopacket, args.site_dir, files, args.top_k)
        print(format_prediction(result))
    return result


if __name__ == "__main__":
    main()
