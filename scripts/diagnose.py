"""Open differential diagnosis on a folder of phenopackets: rankers, local-only, federated, pooled, per site.

    python scripts/diagnose.py data.root=../shared/data/phenopackets
    python scripts/diagnose.py data=phenopackets_variants seeds=[0,1,2]
    python scripts/diagnose.py data.evaluate_on=val       # tuning: validation publications, never test

Writes summary.json, summary.md, quality.json, config.yaml, and the last seed's federated
scorer with the counts the sites shared (model.safetensors, case_counts.npz) to the run folder only when every seed
succeeded; an expected error (bad file, record or field, a setting out of range) is
one line on stderr and exit status 1 (HYDRA_FULL_ERROR=1 shows the trace; federation/entrypoint.py).
"""
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from federation.entrypoint import hydra_task
from federation.outputs import write_json, write_text
from federation.tasks.diagnosis.artefacts import save_run_model
from federation.tasks.diagnosis.experiment import check_settings, run_seed
from federation.tasks.diagnosis.report import build_summary, markdown


def run(cfg: DictConfig, out_dir: Path) -> dict:
    check_settings(cfg)
    if not Path(cfg.data.root).is_dir():
        raise FileNotFoundError(f"{cfg.data.root}: data.root is not a folder of phenopackets")
    seeds = list(cfg.seeds or [cfg.seed])
    results = [run_seed(cfg, int(s)) for s in seeds]
    summary = build_summary(results, seeds, int(cfg.bootstrap.resamples))
    table = markdown(summary)
    write_json(out_dir / "quality.json", results[-1].quality)  # aggregates only, and every counted fallback
    save_run_model(out_dir, results[-1].model, results[-1].shared, results[-1].labels)  # for scripts/predict.py
    write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_json(out_dir / "summary.json", summary)
    write_text(out_dir / "summary.md", table)
    print(table)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="diagnosis")
@hydra_task  # an expected error: one line, and the run folder Hydra made goes too
def main(cfg: DictConfig) -> float:
    summary = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    return summary["overall"]["federated"]["top1"][0]  # a sweeper's objective (on data.evaluate_on=val)


if __name__ == "__main__":
    main()
