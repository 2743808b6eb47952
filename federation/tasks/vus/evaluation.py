"""Held-out-gene evaluation of the variant model, side by side with every single in-silico score.

`run_experiment` calls this when the config has `vus_evaluation` (experiment=vus).
Test rows are variants in genes that no lab trained on (modalities/variant_labs.py).
On exactly those rows it measures AUROC and AUPRC (pathogenic as positive) of the
federated, local-only (each lab's own model on its own test rows) and pooled
models and of each in-silico score, per lab and over all labs.

Missing values are treated the same way for every method: nothing is dropped.
The models see a missing score as 0 plus its missing indicator; a single score
that is missing is imputed with its median over all labs' training rows (for a
rank metric, that places it where an uninformative value would be). Two more
views need no imputation at all: the rows where every feature is present, and,
for each score, the rows where that score is present (paired with the models on
the same rows).

The federated model is calibrated on the held-out calibration genes (`val`
rows, never trained on) and its calibration error and reliability curve are
reported before and after; the calibrator and the feature encoding are written
to the run folder for scripts/score_vus.py.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import binary_calibration_error

from federation.evaluation import predict
from federation.outputs import write_atomic, write_text
from federation.tasks.vus.calibration import VariantCalibration
from federation.tasks.vus.evidence import evidence_config, evidence_levels, thresholds
from federation.tasks.vus.report import reliability_plot, vus_table
from modalities.consortium import Consortium
from modalities.dataset import collate_batch
from models.builder import build_model

TABULAR = "tabular"
MODEL_APPROACHES = ("local", "federated", "pooled")
ECE_BINS = 10


class VusEvaluation:
    def __init__(self, cfg: DictConfig, consortium: Consortium, runs: Sequence[Any]):
        """`runs`: the experiment's SeedRuns (test predictions per approach and site, the final federated weights)."""
        self.cfg = cfg.vus_evaluation
        self.encoding = consortium.readers[TABULAR].encoding
        self.specs = self.encoding.specs
        labels = list(consortium.label_space.labels)
        self.positive = labels.index(str(self.cfg.positive))
        self.labs = [site.name for site in consortium.sites]
        self.test = {site.name: _rows(site.splits["test"], self.positive) for site in consortium.sites}
        self.n_train = {site.name: len(site.splits["train"]) for site in consortium.sites}
        train = np.concatenate([_rows(site.splits["train"], self.positive)["raw"] for site in consortium.sites])
        self.median = np.nanmedian(train, axis=0)
        self.seeds = [self._model_scores(run.predictions) for run in runs]
        self.calibration, calibration_rows = self._calibrate(cfg, consortium, runs[-1].final_model, labels)
        self.report = self._report(calibration_rows)

    def add_to(self, summary: dict) -> dict:
        """Binary AUPRC (pathogenic as positive) beside the spine's metrics, and everything else under "vus"."""
        per_lab = self.report["sites"]
        for lab, entry in summary["sites"].items():
            for approach in MODEL_APPROACHES:
                if approach in entry:
                    entry[approach]["auprc"] = per_lab[lab][approach]["auprc"]
        for approach in MODEL_APPROACHES:
            if approach in summary["overall"]:
                summary["overall"][approach]["auprc"] = self.report["overall"][approach]["auprc"]
                summary["mean_over_sites"][approach]["auprc"] = _nanmean(per_lab[lab][approach]["auprc"] for lab in self.labs)
        if "auprc" not in summary["metric_names"]:
            summary["metric_names"] = list(summary["metric_names"]) + ["auprc"]
        summary["vus"] = self.report
        return summary

    def table(self) -> str:
        return vus_table(self.report)

    def write(self, out_dir: Path) -> None:
        """calibration.json and variant_encoding.json (what score_vus needs) and reliability.png."""
        write_text(out_dir / "calibration.json", self.calibration.to_json())
        write_text(out_dir / "variant_encoding.json", self.encoding.to_json())
        write_atomic(out_dir / "reliability.png", lambda p: reliability_plot(self.curves, p))

    # ------------------------------------------------------------------ computation

    def _model_scores(self, predictions: Mapping[str, Mapping[str, tuple[torch.Tensor, torch.Tensor]]]) -> dict[str, dict[str, np.ndarray]]:
        """approach -> lab -> log-odds of pathogenic on that lab's test rows (in dataset order)."""
        out = {}
        for approach in MODEL_APPROACHES:
            if approach in predictions:
                out[approach] = {lab: log_odds(predictions[approach][lab][0], self.positive) for lab in self.labs}
        return out

    def _single_scores(self, impute: bool) -> dict[str, dict[str, np.ndarray]]:
        """feature -> lab -> oriented value (higher = more pathogenic); missing -> training median when `impute`.
        Every feature is reported alone, allele frequency too; only in-silico scores count for the target."""
        out = {}
        for j, spec in enumerate(self.specs):
            sign = 1.0 if spec.pathogenic == "high" else -1.0
            out[spec.name] = {}
            for lab, rows in self.test.items():
                values = rows["raw"][:, j]
                out[spec.name][lab] = sign * (np.where(np.isnan(values), self.median[j], values) if impute else values)
        return out

    def _calibrate(self, cfg: DictConfig, consortium: Consortium, state: Mapping[str, torch.Tensor], labels: list[str]):
        """Fit the calibrator on the final federated model's logits for the held-out calibration genes."""
        model = build_model(cfg.model, consortium.modalities, labels)
        model.load_state_dict(state)
        items = [item for site in consortium.sites for item in site.splits["val"].items]
        if not items:
            raise ValueError("no calibration rows: set data.holdout.val > 0 for experiment=vus")
        collate = partial(collate_batch, modalities=model.modalities, readers=consortium.readers)
        logits, y = predict(model, DataLoader(items, batch_size=256, collate_fn=collate))
        z, y = log_odds(logits, self.positive), (y.numpy() == self.positive).astype(int)
        method = str(self.cfg.calibration.method)
        fitted = VariantCalibration.fit(z, y, method, int(self.cfg.calibration.bootstrap), seed=int(cfg.seed))
        return fitted, {"n": int(len(y)), "genes": len({item["meta"]["gene"] for item in items}), "method": method}

    def _report(self, calibration_rows: dict) -> dict:
        y = {lab: rows["y"] for lab, rows in self.test.items()}
        imputed, present_only = self._single_scores(impute=True), self._single_scores(impute=False)
        models = {a: [seed[a] for seed in self.seeds] for a in self.seeds[0]}
        everything = np.concatenate([~np.isnan(self.test[lab]["raw"]).any(axis=1) for lab in self.labs])
        ally = _cat(y, self.labs)
        report = {
            "positive": str(self.cfg.positive),
            "not_in_silico": [s.name for s in self.specs if not s.in_silico],
            "missing_values": "models: 0 + missing indicator; single scores: training median (over all labs' training rows)",
            "held_out": self._held_out_facts(calibration_rows),
            "sites": {lab: self._lab_block(lab, y[lab], models, imputed) for lab in self.labs},
            "overall": {name: _seed_metrics(ally, [_cat(s, self.labs) for s in runs]) for name, runs in models.items()}
            | {name: binary_metrics(ally, _cat(s, self.labs)) for name, s in imputed.items()},
            "all_present": {name: _seed_metrics(ally[everything], [_cat(s, self.labs)[everything] for s in runs]) for name, runs in models.items()}
            | {name: binary_metrics(ally[everything], _cat(s, self.labs)[everything]) for name, s in present_only.items()},
            "present_rows": self._paired(ally, models, present_only),
        }
        report["all_present"]["n"] = int(everything.sum())
        calibration, self.curves = self._calibration_block(ally, models)
        report |= calibration
        report["targets"] = self._targets(report)
        return report

    def _lab_block(self, lab: str, y: np.ndarray, models: dict, imputed: dict) -> dict:
        block = {name: _seed_metrics(y, [s[lab] for s in runs]) for name, runs in models.items()}
        singles = {"single_scores": {name: binary_metrics(y, s[lab]) for name, s in imputed.items()}}
        return block | singles | {"n_train": self.n_train[lab], "n_test": int(len(y))}

    def _paired(self, ally: np.ndarray, models: dict, present_only: dict) -> dict:
        """For each score: the rows where it is present, it against the models on the same rows."""
        out = {}
        for name, per_lab in present_only.items():
            values = _cat(per_lab, self.labs)
            rows = ~np.isnan(values)
            entry = {"n": int(rows.sum()), name: binary_metrics(ally[rows], values[rows])}
            entry |= {a: _seed_metrics(ally[rows], [_cat(s, self.labs)[rows] for s in runs]) for a, runs in models.items()}
            out[name] = entry
        return out

    def _calibration_block(self, ally: np.ndarray, models: dict) -> tuple[dict, dict]:
        """ECE of every model before calibration and of the federated model after, evidence levels; and the reliability curves' data."""
        z = _cat(self.seeds[-1]["federated"], self.labs)  # the saved model is the last seed's
        calibrated = self.calibration.point.probability(z)
        ece = {a: _nanmean(expected_calibration_error(ally, sigmoid(_cat(s, self.labs))) for s in runs) for a, runs in models.items()}
        ece["federated_calibrated"] = expected_calibration_error(ally, calibrated)
        curves = {f"{a} (raw)": (ally, sigmoid(_cat(runs[-1], self.labs))) for a, runs in models.items()}
        curves["federated (calibrated)"] = (ally, calibrated)
        evidence = self._evidence(ally, z)
        block = {"calibration": {"method": str(self.cfg.calibration.method), "ece": ece, "data_prior": self.calibration.point.data_prior}}
        return block | {"evidence": evidence}, curves

    def _evidence(self, ally: np.ndarray, z: np.ndarray) -> dict:
        """Evidence levels of the test variants, and the likelihood ratio each level achieves on them (Pejaver et al.'s check)."""
        settings = evidence_config(OmegaConf.to_container(self.cfg.evidence, resolve=True))
        cuts = thresholds(**settings)
        posterior, low, high = self.calibration.posterior(z, settings["prior"], float(self.cfg.calibration.interval))
        levels = np.asarray(evidence_levels(posterior, low, high, cuts, bool(self.cfg.evidence.conservative)))
        n_path, n_benign = max(int(ally.sum()), 1), max(int((1 - ally).sum()), 1)
        out = {"prior": settings["prior"], "odds_very_strong": settings["odds_very_strong"], "levels": {}}
        for name in [*cuts, "uncertain"]:
            hits = levels == name
            pathogenic, benign = int(ally[hits].sum()), int((1 - ally[hits]).sum())
            observed = (pathogenic / n_path) / (benign / n_benign) if benign else math.inf if pathogenic else math.nan
            out["levels"][name] = {"threshold": cuts.get(name), "n": int(hits.sum()), "pathogenic": pathogenic, "benign": benign, "observed_lr": observed}
        return out

    def _targets(self, report: dict) -> dict:
        """The issue's targets: a margin over the best single score on the same rows, and federated above local at every lab."""
        margin = float(self.cfg.targets.auroc_margin)
        in_silico = {s.name for s in self.specs if s.in_silico}
        scores = {k: v["auroc"] for k, v in report["overall"].items() if k in in_silico and not math.isnan(v["auroc"])}
        if not scores:
            raise ValueError("no in-silico score to compare with: data.features has none with in_silico: true")
        best = max(scores, key=lambda k: scores[k])
        federated = report["overall"]["federated"]["auroc"]
        labs = {lab: {"federated": report["sites"][lab]["federated"]["auroc"], "local": report["sites"][lab].get("local", {}).get("auroc", math.nan)} for lab in self.labs}
        paired = {name: entry["federated"]["auroc"] - entry[name]["auroc"] for name, entry in report["present_rows"].items() if name in in_silico}
        return {
            "auroc_margin": margin,
            "best_single_score": best,
            "best_single_auroc": scores[best],
            "federated_auroc": federated,
            "margin_met": federated - scores[best] >= margin,
            "smallest_paired_margin": min(paired.values()) if paired else math.nan,
            "labs": labs,
            "every_lab_federated_above_local": all(v["federated"] > v["local"] for v in labs.values()),
        }

    def _held_out_facts(self, calibration_rows: dict) -> dict:
        genes = {lab: set(rows["genes"]) for lab, rows in self.test.items()}
        return {
            "test_variants": int(sum(len(rows["y"]) for rows in self.test.values())),
            "test_genes": len(set().union(*genes.values())),
            "calibration": calibration_rows,
        }


# ---------------------------------------------------------------------- pure helpers


def log_odds(logits: torch.Tensor, positive: int) -> np.ndarray:
    """log P(positive) / P(negative) from two-class logits."""
    logits = logits.float()
    return (logits[:, positive] - logits[:, 1 - positive]).numpy().astype(np.float64)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def binary_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """AUROC and AUPRC (average precision) with the positive class as positive; NaN without both classes."""
    y = np.asarray(y)
    if len(set(y.tolist())) < 2:
        return {"auroc": math.nan, "auprc": math.nan, "n": int(len(y))}
    return {"auroc": float(roc_auc_score(y, score)), "auprc": float(average_precision_score(y, score)), "n": int(len(y))}


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    if len(y) == 0:
        return math.nan
    return float(binary_calibration_error(torch.as_tensor(p, dtype=torch.float32), torch.as_tensor(y), n_bins=bins, norm="l1"))


def _seed_metrics(y: np.ndarray, scores: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean over training seeds, with the sd beside it when there are several."""
    runs = [binary_metrics(y, s) for s in scores]
    out = {k: _nanmean(r[k] for r in runs) for k in ("auroc", "auprc")} | {"n": int(len(y))}
    if len(runs) > 1:
        out |= {f"{k}_sd": statistics.stdev([r[k] for r in runs]) for k in ("auroc", "auprc")}
    return out


def _rows(dataset, positive: int) -> dict[str, Any]:
    items = dataset.items
    width = len(items[0]["meta"]["raw"]) if items else 0
    return {
        "y": np.asarray([int(item["label"] == positive) for item in items], dtype=int),
        "raw": np.stack([item["meta"]["raw"] for item in items]) if items else np.empty((0, width)),
        "genes": [item["meta"]["gene"] for item in items],
    }


def _cat(per_lab: Mapping[str, np.ndarray], labs: Sequence[str]) -> np.ndarray:
    return np.concatenate([np.asarray(per_lab[lab]) for lab in labs])


def _nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan
