"""Score variants of unknown significance from a VCF or a variant table with a trained `experiment=vus` run.

    python scripts/score_vus.py run_dir=outputs/runs/<date_time> input=path/to/vus.vcf.gz
    python scripts/score_vus.py run_dir=... input=variants.tsv "table.rename={Gene: genename}"

Writes <input>.vus.tsv and <input>.vus.vcf into the Hydra run folder (or out_dir); a VCF
without records gives both files with no variant in them. An expected error is one line on
stderr: exit status 2 for a setting (run_dir, input), 1 for the files (federation/entrypoint.py).
"""
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from federation.entrypoint import hydra_task
from federation.tasks.vus.scoring import score_file, write_scored


@hydra.main(version_base="1.3", config_path="../conf", config_name="score_vus")
@hydra_task
def main(cfg: DictConfig) -> dict:
    scored = score_file(cfg)
    out_dir = Path(cfg.out_dir or HydraConfig.get().runtime.output_dir)
    paths = write_scored(scored, out_dir, float(cfg.evidence.prior), cfg.get("name"))
    print(f"scored {scored.counts['variants_scored']} variants: {scored.counts}")
    print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
    return scored.counts


if __name__ == "__main__":
    main()
