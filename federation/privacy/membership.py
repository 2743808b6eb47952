"""Loss-threshold membership inference against the federated model.

Yeom et al. 2018, "Privacy Risk in Machine Learning: Analyzing the Connection to
Overfitting" (CSF): a model's loss is lower on the patients it trained on, so an
attacker who sees a patient's record and the model guesses "member" when the loss
is under a threshold. Over all thresholds that is the ROC curve of -loss for
members (the sites' training patients) against non-members (their held-out test
patients); AUC 0.5 is a coin toss. The attacker here holds the final global model,
as any model user or site does.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from sklearn.metrics import roc_auc_score, roc_curve

from federation.build import build_module, build_sites
from federation.evaluation import predict
from federation.privacy.simulation import PrivateRun, run_private_federation
from federation.training_env import local_limits
from modalities.consortium import Consortium


def per_sample_losses(model, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of each patient, and whether the model's top class is right."""
    logits, labels = predict(model, loader)
    if not len(labels):
        return torch.empty(0), torch.empty(0, dtype=torch.bool)
    return F.cross_entropy(logits, labels, reduction="none"), logits.argmax(1) == labels


LOW_FPR = 0.01


def loss_threshold_attack(member_losses: torch.Tensor, nonmember_losses: torch.Tensor) -> dict[str, float]:
    """AUC of -loss as a membership score, the best threshold's advantage (TPR - FPR), and the TPR at 1% FPR.

    The TPR at a low FPR says whether the attack can pick out some patients with
    confidence, which an average-case AUC hides (Carlini et al. 2022, "Membership
    Inference Attacks From First Principles", S&P).
    """
    if not len(member_losses) or not len(nonmember_losses):
        raise ValueError("the attack needs both members and non-members")
    truth = np.r_[np.ones(len(member_losses)), np.zeros(len(nonmember_losses))]
    score = -torch.cat([member_losses, nonmember_losses]).double().numpy()
    fpr, tpr, _ = roc_curve(truth, score)
    return {"auc": float(roc_auc_score(truth, score)), "advantage": float((tpr - fpr).max()), "tpr_at_1pct_fpr": tpr_at_fpr(fpr, tpr, LOW_FPR)}


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest TPR of a threshold whose FPR is at most `target` (no interpolation: an attacker picks a threshold)."""
    return float(tpr[fpr <= target].max())


def epsilon_spent(run: PrivateRun, privacy) -> float:
    """The largest epsilon any site spent: inf without DP (no guarantee), 0 for a private run of no round."""
    spent = run.rounds[-1]["privacy"] if run.rounds else {}
    private = privacy is not None and privacy.get("kind", "none") != "none"
    return max((p["epsilon"] for p in spent.values()), default=0.0 if private else float("inf"))


def attack_federation(cfg: DictConfig, privacy_cfg, consortium: Consortium, seed: int) -> dict[str, float]:
    """Train the federation under `privacy_cfg`, then attack its final model."""
    module = build_module(cfg, consortium.modalities, consortium.label_space.labels, seed)
    model = module.model
    sites = build_sites(cfg, consortium, module)
    privacy = OmegaConf.to_container(privacy_cfg, resolve=True) if isinstance(privacy_cfg, DictConfig) else privacy_cfg
    run = run_private_federation(sites, module, instantiate(cfg.federation.strategy), cfg.federation.rounds, local_limits(cfg.federation), seed, privacy,
                                 consortium.label_space.labels)
    members, nonmembers, correct, validated = [], [], [], []
    for site in sites:
        validated.append(per_sample_losses(model, site.loader("val"))[1])
        train_losses, _ = per_sample_losses(model, site.loader("train"))
        test_losses, right = per_sample_losses(model, site.loader("test"))
        members.append(train_losses)
        nonmembers.append(test_losses)
        correct.append(right)
    result = loss_threshold_attack(torch.cat(members), torch.cat(nonmembers))
    epsilon = epsilon_spent(run, privacy)
    return result | {
        "test_accuracy": float(torch.cat(correct).float().mean()),  # over all test patients
        "centre_accuracy": float(np.mean([c.float().mean() for c in correct if len(c)])),  # mean over sites, as FLamby
        "val_accuracy": float(torch.cat(validated).float().mean()) if validated else float("nan"),  # for tuning: never test
        "epsilon": epsilon,
    }
