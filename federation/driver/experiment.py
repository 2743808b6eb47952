"""The main job: federated training across the consortium, the local-only and pooled baselines, the table.

`scripts/train.py` is a thin Hydra wrapper around `run_experiment`. All data is
read and validated before anything is trained, and the run folder's outputs are
written only at the end, each atomically.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from federation.adaptation import cross_fit
from federation.adaptation.deploy import AdaptationSettings, approach_order, choose_deployments, site_predictions
from federation.adaptation.report import add_deployment, compare, deployment_table
from federation.attacks import with_attackers
from federation.build import build_module, build_sites
from federation.compression import with_compression
from federation.driver.baselines import train_local, train_pooled
from federation.driver.extra_evaluation import ExtraEvaluation
from federation.driver.report import APPROACHES, build_summary, combine_seeds, markdown_table
from federation.engine import InProcessEngine
from federation.evaluation import predict
from federation.governance import finish
from federation.governance.layout import ledger_path
from federation.governance.ledger import DEPLOYMENT, Ledger
from federation.governance.run_hooks import governance_hooks
from federation.outputs import write_json, write_model, write_rows, write_text
from federation.participation import Participation
from federation.privacy.hooks import make_sites_private, pretrain_public, wrap_strategy
from federation.settings import ConfigError, check_training_config
from federation.site import Site
from federation.state import get_state, set_state, trainable_keys
from federation.sweeps.objective import check_objective
from federation.tasks.vus.evaluation import VusEvaluation
from federation.tracking import Tracker, track
from federation.training_env import evaluation_device, local_limits, quiet_lightning, use_threads
from federation.validation import UpdateValidator
from modalities.consortium import Consortium, load_consortium

log = logging.getLogger(__name__)


def baseline_limits(cfg: DictConfig) -> dict:
    """Local-only and pooled budget: `baselines.epochs`/`baselines.steps` if set, else the whole federated run's."""
    if cfg.baselines.get("steps"):
        return {"max_steps": int(cfg.baselines.steps), "max_epochs": -1}
    if cfg.baselines.get("epochs"):
        return {"max_epochs": int(cfg.baselines.epochs)}
    per_round = local_limits(cfg.federation)
    key = "max_steps" if "max_steps" in per_round else "max_epochs"
    budget = per_round[key] * int(cfg.federation.rounds)
    if budget < 1:  # -1 is Lightning's "no limit": a local-only model that never stops
        raise ConfigError("federation.rounds", cfg.federation.rounds, "the baselines' budget is rounds x the local budget: set baselines.epochs or steps")
    return {**per_round, key: budget}


def run_experiment(cfg: DictConfig, out_dir: Path) -> dict:
    """One run, or one per training seed in `cfg.seeds` (same data, mean and sd over seeds in the summary)."""
    check_training_config(cfg)  # every bound, name and path, before any data is read or file written
    if cfg.get("search"):
        check_objective(cfg)  # a search trial's metric and approach are ones this run reports
    with track(cfg, out_dir) as tracker:  # MLflow (conf/tracking/): params, each round, the summary, the run folder
        return _run_tracked(cfg, out_dir, tracker)


def _run_tracked(cfg: DictConfig, out_dir: Path, tracker: Tracker) -> dict:
    quiet_lightning()
    use_threads(cfg.get("torch_threads"))
    consortium = load_consortium(cfg.data, seed=cfg.seed)
    seeds = list(cfg.get("seeds") or [cfg.seed])
    # governed runs keep one ledger and registry per training seed
    run_dirs = {seed: out_dir if len(seeds) == 1 else out_dir / f"seed_{seed}" for seed in seeds}
    governed = [d for run_dir in run_dirs.values() for d in seed_dirs(cfg, run_dir)]
    runs = [_run_seed(cfg, consortium, seed, run_dirs[seed], tracker.observers(seed, run_dirs[seed])) for seed in seeds]
    summaries = [r.summary for r in runs]
    summary = summaries[0] if len(runs) == 1 else combine_seeds(summaries, seeds)
    if len(runs) > 1 and "deployment" in summaries[0]:
        summary["deployment"] = {f"seed {s}": r["deployment"] for s, r in zip(seeds, summaries)}
        summary["deployed_vs_local"] = compare([r.predictions for r in runs], AdaptationSettings.from_cfg(cfg.adaptation).bootstrap_resamples, seeds[0])
    table = markdown_table(summary, cfg.get("report", {}).get("table_metrics"), reference=cfg.get("report", {}).get("reference"))
    table += deployment_table(summary)
    # Variant scoring (experiment=vus): held-out genes vs single in-silico scores, calibration (federation/tasks/vus/evaluation.py).
    vus = VusEvaluation(cfg, consortium, runs) if cfg.get("vus_evaluation") else None
    summary, table = (vus.add_to(summary), table + "\n" + vus.table()) if vus else (summary, table)
    last = runs[-1]
    _write_run(out_dir, cfg, summary, table, last, consortium)
    if cfg.get("governance") is not None and cfg.governance.get("enabled", True):
        for run_dir in governed:
            finish(run_dir, cfg.governance)  # the dashboard, from the ledger
    if vus:
        vus.write(out_dir)
    print(table)
    return summary


@dataclass
class SeedRun:
    summary: dict
    history: list[dict]
    final_model: dict[str, torch.Tensor]
    predictions: dict | None = None  # approach -> site -> (test logits, labels), for evaluations beyond the summary


@dataclass
class Trained:
    """One training of a seed (or of one fold of a cross-fitted seed): what its summary is made from."""

    predictions: dict            # approach -> site -> (test logits, labels)
    candidates: dict | None      # site -> SitePredictions: what each site may deploy (adaptation.enabled)
    n_train: dict[str, int]
    history: list[dict]
    final_model: dict[str, torch.Tensor]
    extra: ExtraEvaluation | None = None
    communication: dict | None = None


def seed_dirs(cfg: DictConfig, run_dir: Path) -> list[Path]:
    """Where a seed's trainings write their governance records: the seed's folder, or one per cross-fitting fold."""
    n_folds = cross_fit.folds(cfg)
    return [run_dir / f"fold_{k}" for k in range(n_folds)] if n_folds else [run_dir]


def _run_seed(cfg: DictConfig, consortium: Consortium, seed: int, run_dir: Path, observers: list | tuple = ()) -> SeedRun:
    """One seed: one training, or with adaptation.cross_fit=K, K trainings on K validation folds merged (cross_fit.py)."""
    n_folds = cross_fit.folds(cfg)
    if not n_folds:
        return _summarise(cfg, _train(cfg, consortium, seed, run_dir, observers), seed, [run_dir])
    dirs = seed_dirs(cfg, run_dir)
    folds = [_train(cfg, load_consortium(cross_fit.fold_data(cfg.data, k, n_folds), seed=cfg.seed), seed, dirs[k], observers) for k in range(n_folds)]
    predictions = {a: cross_fit.average_test([f.predictions[a] for f in folds], a) for a in folds[0].predictions}
    candidates = cross_fit.merge_folds([f.candidates for f in folds]) if folds[0].candidates else None
    merged = Trained(predictions, candidates, folds[0].n_train, folds[-1].history, folds[-1].final_model, None, folds[-1].communication)
    return _summarise(cfg, merged, seed, dirs, n_folds)


def _train(cfg: DictConfig, consortium: Consortium, seed: int, run_dir: Path, observers: list | tuple = ()) -> Trained:
    module = build_module(cfg, consortium.modalities, consortium.label_space.labels, seed)
    model = module.model
    make_trainer = instantiate(cfg.trainer)
    sites = build_sites(cfg, consortium, module, make_trainer)
    make_sites_private(cfg.get("privacy"), sites, local_limits(cfg.federation), cfg.federation.rounds, model)  # privacy=dp_sgd
    pretrain_public(cfg.get("privacy"), module, consortium.label_space.labels, seed)  # public data first, where configured
    compressing = with_compression(sites, cfg.federation.get("compression"))  # update codec at each site, if configured
    rounds_sites = with_attackers(compressing, cfg.federation.get("attackers"))  # simulated Byzantine sites, if configured
    device = evaluation_device(cfg.trainer.accelerator)
    initial = get_state(module, trainable_keys(module))
    log.info("seed %d, consortium: %s", seed, {s.name: (s.n_train, s.data.modalities) for s in sites})
    # Knowledge-only baseline and open-setting ranks, only where an experiment configures them.
    extra = ExtraEvaluation(cfg.extra_evaluation, consortium.label_space.labels, sites) if cfg.get("extra_evaluation") else None
    hooks = governance_hooks(cfg, run_dir, consortium, module, sites, device)
    hooks["observers"] = [*hooks.get("observers", []), *observers]  # the tracker's last: it logs the round's final decision

    federation = InProcessEngine(
        rounds_sites, module, wrap_strategy(instantiate(cfg.federation.strategy), cfg.get("privacy"), cfg.federation.rounds), cfg.federation.rounds, local_limits(cfg.federation), seed, device,
        participation=Participation(**cfg.federation.get("participation", {})),
        validator=UpdateValidator(**cfg.federation.get("validator", {})),
        concurrent_sites=int(cfg.federation.get("concurrent_sites", 1)),
        **hooks,
    ).run(progress=cfg.get("progress", True))
    predictions = {"federated": _predict_sites(module, sites, device, extra, "federated", federation.global_state)}
    final_model = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if cfg.get("personalisation", {}).get("enabled"):
        predictions["personalised"] = _personalised_predictions(cfg.personalisation, module, sites, federation.global_state, seed, device, extra)

    module.optimizer_factory = instantiate(cfg.model.optimizer)
    baselines, local_states = _baseline_predictions(cfg, module, sites, initial, seed, make_trainer, device, extra)
    predictions |= baselines
    candidates = None
    if cfg.get("adaptation", {}).get("enabled"):  # what each site may deploy, predicted on its validation split
        candidates = site_predictions(module, sites, federation.global_state, local_states, AdaptationSettings.from_cfg(cfg.adaptation), seed, device)
    communication = _update_bytes(compressing, cfg.federation.compression) if cfg.federation.get("compression") else None
    return Trained(predictions, candidates, {s.name: s.n_train for s in sites}, federation.history, final_model, extra, communication)


def _summarise(cfg: DictConfig, run: Trained, seed: int, run_dirs: list[Path], n_folds: int = 0) -> SeedRun:
    """The seed's summary: every approach per site, and what each site deployed (chosen on validation)."""
    predictions, deployments = dict(run.predictions), {}
    if run.candidates is not None:
        adaptation = AdaptationSettings.from_cfg(cfg.adaptation)
        deployments = choose_deployments(run.candidates, adaptation)
        if n_folds:
            deployments = {site: replace(d, record=cross_fit.record(d.record, n_folds)) for site, d in deployments.items()}
        for run_dir in run_dirs:
            _record_deployments(cfg, run_dir, deployments)
        for name, deployment in deployments.items():
            for approach, pair in deployment.test.items():
                predictions.setdefault(approach, {})[name] = pair
    extra = run.extra
    if extra:
        predictions["knowledge"] = extra.knowledge_predictions()

    adapted = next(iter(deployments.values())).test if deployments else {}  # e.g. finetuned+calibrated, beside APPROACHES
    ordered = {a: predictions[a] for a in approach_order(APPROACHES, adapted) if a in predictions}
    metrics = cfg.get("report", {}).get("metrics")
    summary = build_summary(cfg.task, ordered, run.n_train, dict(metrics) if metrics else None)
    if extra:
        trained_labels = {s.name: set(s.data.splits["train"].labels) for s in extra.sites}
        summary = extra.add_to(summary) | {"extra_evaluation": extra.facts(trained_labels)}
    if deployments:
        summary = add_deployment(summary, deployments, predictions, adaptation.bootstrap_resamples, seed)
    if run.communication:
        summary["communication"] = run.communication
    return SeedRun(summary, run.history, run.final_model, ordered)


def _record_deployments(cfg: DictConfig, run_dir: Path, deployments: dict) -> None:
    """A governed run's ledger gets one entry per site: what it deployed, on which validation figures, and why."""
    if cfg.get("governance") is None or not cfg.governance.get("enabled", True):
        return
    ledger = Ledger(ledger_path(cfg.governance, run_dir))
    for site, deployment in deployments.items():
        ledger.append(DEPLOYMENT, {"site": site, **deployment.record})


def _update_bytes(sites: list, compression: DictConfig) -> dict:
    """What the codec sent: mean serialised bytes per update, per site (federation/compression.py)."""
    sent = {s.name: round(sum(s.sent_bytes) / len(s.sent_bytes)) for s in sites if s.sent_bytes}
    return {"compression": OmegaConf.to_container(compression), "mean_bytes_per_update": sent}


def _predict_sites(module, sites: list[Site], device: str, extra: ExtraEvaluation | None, approach: str, state=None) -> dict:
    """Test-set predictions at each site of the module's model, or of `state` as each site runs it (FedBN: its own norms)."""
    predictions = {}
    for site in sites:
        if state is not None:
            set_state(module, site.personalise(state))
        if extra:
            extra.trained(approach, module.model, [site], device)
        predictions[site.name] = predict(module.model, site.loader("test"), device)
    if state is not None:
        set_state(module, state)
    return predictions


def _personalised_predictions(cfg, module, sites: list[Site], global_state, seed: int, device: str, extra) -> dict:
    """Each site fine-tunes the final global model on its own training data alone, then predicts its test set."""
    limits = {"max_steps": int(cfg.steps), "max_epochs": -1} if cfg.get("steps") else {"max_epochs": int(cfg.epochs)}
    predictions = {}
    for i, site in enumerate(sites):
        set_state(module, site.fine_tune(module, global_state, limits, seed=seed + 500 + i))
        predictions |= _predict_sites(module, [site], device, extra, "personalised")
    set_state(module, global_state)
    return predictions


def _baseline_predictions(cfg, module, sites, initial, seed, make_trainer, device, extra) -> tuple[dict, dict]:
    """Local-only (each site alone) and pooled (everyone's training data) models, from the same initial weights;
    and each site's local-only weights (a candidate for what the site deploys)."""
    limits = baseline_limits(cfg) if cfg.baselines.local or cfg.baselines.pooled else {}
    out, local_states = {}, {}
    if cfg.baselines.local:
        out["local"] = {}
        for i, site in enumerate(sites):
            local_states[site.name] = train_local(site, module, initial, limits, seed=seed + i)
            set_state(module, local_states[site.name])
            out["local"] |= _predict_sites(module, [site], device, extra, "local")
    if cfg.baselines.pooled:
        set_state(module, train_pooled(sites, module, initial, limits, seed, make_trainer))
        out["pooled"] = _predict_sites(module, sites, device, extra, "pooled")
    return out, local_states


def _write_run(out_dir: Path, cfg: DictConfig, summary: dict, table: str, run: SeedRun, consortium: Consortium) -> None:
    labels = json.dumps(list(consortium.label_space.labels))
    write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_rows(out_dir / "metrics.csv", run.history)
    write_model(out_dir / "model.safetensors", run.final_model, {"labels": labels, "task": str(cfg.task)})
    write_json(out_dir / "quality.json", consortium.quality)  # per-site data-quality aggregates, no patient data
    write_text(out_dir / "summary.md", table)
    write_json(out_dir / "summary.json", summary)
