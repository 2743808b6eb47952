"""Evaluate a model on a loader with the shared metric definitions."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from models.metrics import classification_metrics


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels over a loader (eval mode, restored afterwards)."""
    was_training = model.training
    model.eval().to(device)
    logits, labels = [], []
    for batch in loader:
        inputs = {m: t.to(device) for m, t in batch["inputs"].items()}
        logits.append(model(inputs, batch["present"].to(device)).float().cpu())
        labels.append(batch["label"])
    model.train(was_training)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, loader: DataLoader, device: str | torch.device = "cpu") -> dict[str, float]:
    logits, labels = predict(model, loader, device)
    return classification_metrics(logits, labels)
