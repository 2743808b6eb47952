"""Cross-fitted selection: every training patient of a site takes part in its choice, not only a small validation draw.

A site with 17 or 6 validation patients cannot tell its candidates apart (the heart
benchmark's VA and Switzerland kept `local` at every seed, on one fixed draw, while the
calibrated global model was better on their test patients). With `adaptation.cross_fit: K`
the whole run is repeated K times, validation being fold k of K stratified folds of each
site's training rows (data.split.val_fold): federation, baselines and adaptations are
trained K times, and each candidate's validation predictions of the K runs, put together,
cover every training patient once, each predicted by models that did not train on it (out
of fold). Post-hoc candidates (calibration, mixture) are fitted and scored on these, and
each site chooses on K times more patients. What it deploys is the K runs' models of its
choice, averaged (their logits: the cross-validation ensemble; each approach's test column
is its K-fold average the same way, so local-only, federated and deployed stay comparable).

This is K-fold cross-validation for model selection (Stone 1974; Arlot & Celisse 2010),
with the ensemble of the fold models as the deployed predictor (the "CV-bagging" of
stacking, Wolpert 1992). Cost: K times the training. Test patients never take part.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from omegaconf import DictConfig, open_dict

from federation.adaptation.deploy import Pair, SitePredictions
from federation.settings import ConfigError


def folds(cfg: DictConfig) -> int:
    """adaptation.cross_fit (0 or 1: off), refused where the data cannot be cut into validation folds."""
    adaptation = cfg.get("adaptation") or {}
    k = int(adaptation.get("cross_fit") or 0)
    if k <= 1:
        if k < 0:
            raise ConfigError("adaptation.cross_fit", k, "must be 0 (off) or a number of folds >= 2")
        return 0
    if not adaptation.get("enabled"):
        raise ConfigError("adaptation.cross_fit", k, "cross-fits the deployment choice: needs adaptation.enabled=true")
    split = cfg.data.get("split") if "split" in cfg.data else None
    if split is None or "val_fold" not in split:
        raise ConfigError("adaptation.cross_fit", k, "needs data whose validation is carved from the training rows (data.split.val_fold, e.g. data=heart)")
    if cfg.get("extra_evaluation"):
        raise ConfigError("adaptation.cross_fit", k, "is not supported with extra_evaluation (its knowledge baseline is per run)")
    return k


def fold_data(data: DictConfig, k: int, n_folds: int) -> DictConfig:
    """The data config of fold `k`: validation is fold k of n_folds stratified folds of each site's training rows."""
    out = copy.deepcopy(data)
    with open_dict(out):
        out.split.val_fraction = 1.0 / n_folds
        out.split.val_fold = k
    return out


def merge_folds(per_fold: Sequence[dict[str, SitePredictions]]) -> dict[str, SitePredictions]:
    """Per site: validation predictions of the folds concatenated (out of fold, every training patient once), test
    logits averaged over the folds, and what each fold fitted."""
    sites = list(per_fold[0])
    return {site: _merge_site([fold[site] for fold in per_fold], site) for site in sites}


def average_test(per_fold: Sequence[dict[str, Pair]], where: str) -> dict[str, Pair]:
    """site -> (mean of the folds' test logits, labels) for one approach; the folds share the test patients."""
    return {site: _mean_pairs([fold[site] for fold in per_fold], f"{where}, site {site!r}") for site in per_fold[0]}


def _merge_site(folds: list[SitePredictions], site: str) -> SitePredictions:
    names = [n for n in folds[0].val if all(n in f.val for f in folds)]
    val = {n: (torch.cat([f.val[n][0] for f in folds]), torch.cat([f.val[n][1] for f in folds])) for n in names}
    test = {n: _mean_pairs([f.test[n] for f in folds], f"site {site!r}, candidate {n!r}") for n in names}
    fitted = {n: [f.fitted.get(n) for f in folds] for n in folds[0].fitted}
    return SitePredictions(val, test, {n: {"folds": v} for n, v in fitted.items()})


def _mean_pairs(pairs: list[Pair], where: str) -> Pair:
    labels = pairs[0][1]
    if any(not torch.equal(p[1], labels) for p in pairs):
        raise ValueError(f"{where}: the folds' test patients differ; cross-fitting needs one test split for every fold")
    return torch.stack([p[0].float() for p in pairs]).mean(0), labels


def record(deployment_record: dict, n_folds: int) -> dict:
    """The choice's record, saying it was made out of fold over n_folds runs."""
    return {**deployment_record, "cross_fit": {"folds": n_folds, "validation": "out of fold: every training patient once"}}
