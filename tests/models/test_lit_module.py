"""Training-time behaviour of the LightningModule: modality dropout and metrics."""
import math

import pytest
import torch

from models.lit_module import drop_modalities
from models.metrics import METRIC_NAMES, classification_metrics


def test_modality_dropout_never_adds_and_never_empties_a_row():
    torch.manual_seed(0)
    present = torch.rand(500, 5) < 0.6
    present[0] = False  # a row with nothing stays empty

    kept = drop_modalities(present, rate=0.7)

    assert not (kept & ~present).any()
    has_any = present.any(1)
    assert kept[has_any].any(1).all()
    assert not kept[0].any()
    assert kept.sum() < present.sum()


def test_modality_dropout_rate_zero_is_identity():
    present = torch.rand(50, 4) < 0.5

    assert torch.equal(drop_modalities(present, rate=0.0), present)


def test_metrics_perfect_and_uninformative_predictions():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    perfect = torch.nn.functional.one_hot(labels, 4).float() * 10

    good, flat = classification_metrics(perfect, labels), classification_metrics(torch.zeros(6, 4), labels)

    assert set(good) == set(METRIC_NAMES)
    assert good["accuracy"] == 1.0 and good["macro_auroc"] == 1.0
    assert flat["macro_auroc"] == 0.5
    assert good["ece"] < 0.01 < flat["ece"]  # confident and right vs unsure (0.25) and right a third of the time


def test_macro_auroc_ignores_classes_absent_from_the_labels_and_is_undefined_for_one_class():
    labels = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[5.0, 0, 0, 0], [4, 0, 0, 0], [0, 5, 0, 0], [0, 4, 0, 0]])

    assert classification_metrics(logits, labels)["macro_auroc"] == 1.0
    assert math.isnan(classification_metrics(logits[:2], labels[:2])["macro_auroc"])


def test_epoch_train_loss_is_what_a_logger_records_and_needs_no_logger(tmp_path):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger
    from support import tiny_module, tiny_site

    site = tiny_site("s", 10, with_imaging=True, seed=0)
    losses = {}
    for name, logger in (("logged", CSVLogger(tmp_path)), ("unlogged", False)):
        module = tiny_module()
        for layer in module.modules():  # deterministic steps: both fits see the same losses
            if isinstance(layer, torch.nn.Dropout):
                layer.p = 0.0
        L.seed_everything(0, verbose=False)
        trainer = L.Trainer(max_epochs=2, logger=logger, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(module, train_dataloaders=site.loader("train", shuffle=True, seed=0))
        losses[name] = (module.epoch_train_loss, trainer.callback_metrics.get("train/loss"))

    (logged_own, logged_lightning), (unlogged_own, unlogged_lightning) = losses["logged"], losses["unlogged"]
    assert logged_own == pytest.approx(float(logged_lightning), rel=1e-5)
    assert unlogged_own == pytest.approx(logged_own, rel=1e-5) and unlogged_lightning is None
