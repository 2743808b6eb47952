"""Imbalance losses: each against its definition, counts handling, and the config choice end to end."""
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from support import compose_config, tiny_module, tiny_site

from federation.state import get_state, trainable_keys
from models.losses import (
    ClassWeightedCrossEntropy,
    CountAwareLoss,
    FocalLoss,
    LogitAdjustedLoss,
    class_counts,
)

torch.manual_seed(0)
LOGITS = torch.randn(12, 4)
LABELS = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 0, 1])
COUNTS = class_counts(LABELS.tolist(), 4)  # class 3 never seen


def test_class_weighted_cross_entropy_weighs_by_inverse_frequency_and_ignores_absent_classes():
    loss = ClassWeightedCrossEntropy(power=1.0)
    loss.set_class_counts(COUNTS)
    weights = torch.tensor([1 / 7, 1 / 4, 1 / 1, 0.0])
    weights = weights / weights[:3].mean()

    assert torch.allclose(loss(LOGITS, LABELS), F.cross_entropy(LOGITS, LABELS, weight=weights))
    # balanced: each present class carries the same total weight (7 x 1/7 = 4 x 1/4 = 1 x 1)
    per_class = torch.stack([weights[c] * COUNTS[c] for c in range(3)])
    assert torch.allclose(per_class, per_class[0].expand(3))


def test_focal_loss_is_cross_entropy_at_gamma_zero_and_below_it_otherwise():
    ce = F.cross_entropy(LOGITS, LABELS)

    assert torch.allclose(FocalLoss(gamma=0)(LOGITS, LABELS), ce)
    assert FocalLoss(gamma=2)(LOGITS, LABELS) < ce
    confident = torch.nn.functional.one_hot(LABELS, 4).float() * 10
    # well-classified samples are down-weighted by (1 - p)^2, far below their cross-entropy
    assert FocalLoss(gamma=2)(confident, LABELS) < 1e-3 * F.cross_entropy(confident, LABELS)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1)


def test_logit_adjustment_adds_tau_log_prior_and_is_cross_entropy_under_a_uniform_prior():
    loss = LogitAdjustedLoss(tau=1.0, epsilon=0.0)
    loss.set_class_counts(torch.full((4,), 3.0))
    assert torch.allclose(loss(LOGITS, LABELS), F.cross_entropy(LOGITS, LABELS))

    loss = LogitAdjustedLoss(tau=0.5, epsilon=1e-3)
    loss.set_class_counts(COUNTS)
    prior = (COUNTS + 1e-3) / (COUNTS + 1e-3).sum()
    assert torch.allclose(loss(LOGITS, LABELS), F.cross_entropy(LOGITS + 0.5 * prior.log(), LABELS))


@pytest.mark.parametrize("cls", [ClassWeightedCrossEntropy, LogitAdjustedLoss])
def test_losses_that_need_counts_say_so(cls):
    with pytest.raises(ValueError, match="set_class_counts"):
        cls()(LOGITS, LABELS)
    loss = cls()
    loss.set_class_counts(torch.ones(3))
    with pytest.raises(ValueError, match="one per class, 4"):
        loss(LOGITS, LABELS)


def test_a_site_trains_with_its_own_counts_and_forgets_them_after():
    module = tiny_module()
    module.loss = LogitAdjustedLoss()
    site = tiny_site("a", 8, True, seed=1)
    update = site.train(module, get_state(module, trainable_keys(module)), {"max_epochs": 1}, round_=1, seed=1)

    assert update.metrics["train_loss"] > 0
    assert module.loss.class_counts.numel() == 0  # never carried to the next trainer
    assert torch.equal(site.class_counts(3), torch.tensor([3.0, 3.0, 2.0]))


@pytest.mark.parametrize("name, cls", [("class_weighted", ClassWeightedCrossEntropy), ("focal", FocalLoss), ("logit_adjusted", LogitAdjustedLoss), ("cross_entropy", CountAwareLoss)])
def test_each_loss_config_composes_and_builds(name, cls):
    cfg = compose_config([f"model/loss={name}"])

    assert type(instantiate(cfg.model.loss)) is cls
