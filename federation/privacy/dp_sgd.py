"""Sample-level DP-SGD at a site, with Opacus: clip each patient's gradient, add Gaussian noise.

Abadi et al. 2016, "Deep Learning with Differential Privacy" (CCS), through Opacus
(Yousefpour et al. 2021): Poisson-sampled batches, Opacus's DPOptimizer for the
per-sample clipping and noise, and the site's PrivacyBudget (an RDP accountant)
stepped once per optimizer step. A plain torch loop over the module's loss
stands in for `trainer.fit`: Lightning's loop does not give DP-SGD Poisson
sampling or per-sample gradients.

Per-sample gradients come from Opacus's hooks (`GradSampleModule`) where every
sample passes through every trained layer (single-modality models such as
`tabular_lr`), and from one backward pass per sample ("microbatch") where it does
not: the multimodal model runs each encoder on the patients that have that
modality only, which Opacus's hooks cannot attribute. `auto` also takes
microbatches for small batches (FLamby's heart protocol uses 4), where they are faster.

Not DP-compatible: trained BatchNorm (its statistics mix patients, and its running
buffers travel in the update). The `resnet` imaging encoder (MONAI's ResNet
normalises its blocks with BatchNorm whatever `norm` says) can be used only with its
backbone frozen (`privacy.freeze`, the default: it then runs in eval mode as a
fixed feature extractor, see public_parts.py); the `densenet` encoder can be
trained, with `model.encoders.imaging.backbone.norm=instance`. The HPO-set,
variant-set, MLP, tabular and frozen-MiniLM encoders, and every fusion and head,
work; the attention fusion (nn.MultiheadAttention) through microbatches only.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from opacus.accountants.utils import get_noise_multiplier
from opacus.grad_sample import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from opacus.validators import ModuleValidator
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader

from federation.privacy.accountant import PrivacyBudget
from federation.privacy.public_parts import fix_frozen_modules, frozen
from models.lit_module import drop_modalities

PER_SAMPLE_MODES = ("auto", "opacus", "microbatch")
HOOKS_FROM_BATCH = 32  # below this, one backward pass per sample was faster here than Opacus's hooks


class DPIncompatible(ValueError):
    """The model has layers DP-SGD cannot train privately (BatchNorm)."""


@dataclass
class DPSpent:
    epsilon: float
    delta: float
    steps: int
    noise_multiplier: float
    sample_rate: float
    train_loss: float


def check_dp_compatible(model: nn.Module, mode: str) -> None:
    """Refuse what the per-sample gradients cannot handle, naming the layers.

    Opacus's hooks: whatever its ModuleValidator rejects (BatchNorm, nn.MultiheadAttention).
    Microbatches: BatchNorm in training mode only (autograd handles attention; BatchNorm mixes patients and
    updates its buffers); a frozen BatchNorm backbone runs in eval mode (public_parts.fix_frozen_modules) and is fine.
    """
    if mode == "opacus":
        errors = sorted({str(e) for e in ModuleValidator.validate(model, strict=False)})
    else:
        errors = sorted({f"{name} is {type(m).__name__}" for name, m in model.named_modules() if isinstance(m, _BatchNorm) and m.training})
    if errors:
        raise DPIncompatible(f"model cannot be trained with DP-SGD ({mode} per-sample gradients): " + "; ".join(errors)[:600])


def calibrate_noise(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The noise multiplier that spends exactly `epsilon` over `steps` steps (Opacus's search over its RDP accountant)."""
    if math.isinf(epsilon) or steps == 0:  # no guarantee asked for, or nothing to spend it on
        return 0.0
    return get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps, accountant="rdp")


def planned_steps(limits: Mapping, n_samples: int, batch_size: int) -> int:
    """Optimizer steps of one local fit: `max_steps`, or `max_epochs` expected Poisson batches per epoch."""
    if limits.get("max_steps") and limits["max_steps"] > 0:
        return int(limits["max_steps"])
    return int(limits.get("max_epochs", 1)) * max(1, round(n_samples / batch_size))


def logical_batch(dp_cfg: Mapping, n_samples: int, loader_batch: int) -> int:
    """Expected Poisson batch of a DP-SGD step: `batch_size`, else the loader's; capped at the site's patients (a site
    smaller than one batch samples each patient with probability 1, never above).

    Larger logical batches average more clipped gradients per unit of noise: the noise
    on the mean gradient falls as 1/B while the calibrated multiplier grows more
    slowly (Abadi et al. 2016, section 3; De et al. 2022, "Unlocking High-Accuracy
    Differentially Private Image Classification through Scale"). Per-sample gradients
    are computed one patient (or one loader batch) at a time, so memory does not grow with it.
    """
    wanted = dp_cfg.get("batch_size") or loader_batch
    return max(1, min(int(wanted), n_samples))


def dp_limits(limits: Mapping, dp_cfg: Mapping) -> dict:
    """The local budget of a private fit: `local_epochs` from the DP config when set (fewer, better-conditioned
    updates spend less of the budget per round), else the federation's."""
    epochs = dp_cfg.get("local_epochs")
    return {"max_epochs": int(epochs)} if epochs else dict(limits)


def dp_fit(module, loader: DataLoader, limits: Mapping, dp_cfg: Mapping, budget: PrivacyBudget, seed: int = 0) -> DPSpent:
    """Train `module` in place with DP-SGD for `limits`; return the privacy spent so far (budget checked first).

    `dp_cfg`: `noise_multiplier` (already calibrated, see `calibrate_noise`), `max_grad_norm`,
    `per_sample_grads` (auto | opacus | microbatch), and optionally `freeze` (parameter-name
    globs kept as they are, see public_parts.py), `batch_size` (the expected logical batch),
    `local_epochs` and `lr` (the optimizer's step size under DP; null: the model's). Raises BudgetExhausted before any training when the fit would overrun `budget`.
    """
    with frozen(module.model, dp_cfg.get("freeze") or ()):
        return _dp_fit(module, loader, dp_limits(limits, dp_cfg), dp_cfg, budget, seed)


def _dp_fit(module, loader: DataLoader, limits: Mapping, dp_cfg: Mapping, budget: PrivacyBudget, seed: int) -> DPSpent:
    model = module.model
    dataset = loader.dataset
    batch_size = logical_batch(dp_cfg, len(dataset), loader.batch_size)
    mode = _per_sample_mode(dp_cfg.get("per_sample_grads", "auto"), model, batch_size)
    sample_rate = batch_size / len(dataset)
    steps = planned_steps(limits, len(dataset), batch_size)
    sigma = float(dp_cfg["noise_multiplier"])
    was_training = model.training
    model.train()
    fix_frozen_modules(model)
    try:
        check_dp_compatible(model, mode)
        budget.check(sigma, sample_rate, steps)
        losses = _train_private(module, dataset, loader.collate_fn, dp_cfg, budget, sigma, sample_rate, batch_size, steps, mode, seed)
    finally:
        model.train(was_training)
    epsilon, delta = budget.spent()
    return DPSpent(epsilon, delta, steps, sigma, sample_rate, sum(losses) / max(len(losses), 1))


def _train_private(module, dataset, collate, dp_cfg, budget, sigma, sample_rate, batch_size, steps, mode, seed) -> list[float]:
    """Opacus's Poisson sampler and DPOptimizer (clip, noise, accountant step) around the per-sample gradients."""
    generator = torch.Generator().manual_seed(seed)
    sampler = UniformWithReplacementSampler(num_samples=len(dataset), sample_rate=sample_rate, generator=generator)
    inner = module.configure_optimizers()
    if dp_cfg.get("lr"):  # a private fine-tuning step smaller than training from scratch takes
        for group in inner.param_groups:
            group["lr"] = float(dp_cfg["lr"])
    optimizer = DPOptimizer(
        inner, noise_multiplier=sigma, max_grad_norm=float(dp_cfg["max_grad_norm"]),
        expected_batch_size=batch_size, loss_reduction="mean", generator=generator,
    )
    optimizer.attach_step_hook(budget.accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
    wrapped = GradSampleModule(module.model, loss_reduction="mean") if mode == "opacus" else None
    try:
        return _train_steps(module, wrapped, optimizer, sampler, dataset, collate, steps)
    finally:
        if wrapped is not None:
            wrapped._close()


def _per_sample_mode(mode: str, model: nn.Module, batch_size: int) -> str:
    if mode not in PER_SAMPLE_MODES:
        raise ValueError(f"per_sample_grads must be one of {PER_SAMPLE_MODES}, got {mode!r}")
    if mode == "auto":
        single = len(getattr(model, "modalities", ())) == 1
        hooks_fit = single and batch_size >= HOOKS_FROM_BATCH and _hooks_support(model)
        return "opacus" if hooks_fit else "microbatch"
    return mode


def _hooks_support(model: nn.Module) -> bool:
    """Opacus's hooks refuse a trainable layer that also holds buffers (the knowledge head's public annotation
    matrix, for one); one backward pass per sample handles it, since the buffers are constants of the model."""
    return not GradSampleModule.validate(model, strict=False)


def _train_steps(module, wrapped, optimizer: DPOptimizer, sampler, dataset, collate, steps: int) -> list[float]:
    device = next(module.model.parameters()).device
    params = [p for p in module.model.parameters() if p.requires_grad]
    losses, done = [], 0
    while done < steps:
        for indices in sampler:
            if done == steps:
                break
            optimizer.zero_grad(set_to_none=True)
            if indices:
                batch = _to(collate([dataset[i] for i in indices]), device)
                if module.hparams.get("modality_dropout", 0) > 0:
                    batch = {**batch, "present": drop_modalities(batch["present"], module.hparams.modality_dropout)}
                losses.append(_per_sample_grads(module, wrapped, batch, params))
            else:  # an empty Poisson batch is still a noisy step: the accountant counts it
                for p in params:
                    p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
            optimizer.step()
            done += 1
    return losses


def _per_sample_grads(module, wrapped, batch: dict, params: list[torch.Tensor]) -> float:
    """Fill p.grad_sample ([B, *p.shape]); returns the batch's mean loss."""
    if wrapped is not None:
        loss = module.loss(wrapped(batch["inputs"], batch["present"]), batch["label"])
        loss.backward()
        return float(loss.detach())
    n = len(batch["label"])
    per_sample = [[] for _ in params]
    total = 0.0
    for i in range(n):
        one = _slice(batch, i, n)
        loss = module.loss(module.model(one["inputs"], one["present"]), one["label"])
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for store, grad, p in zip(per_sample, grads, params):
            store.append(torch.zeros_like(p) if grad is None else grad)
        total += float(loss.detach())
    for p, store in zip(params, per_sample):
        p.grad_sample = torch.stack(store)
    return total / n


def _slice(value, i: int, n: int):
    """Row i of a collated batch (tensors and lists whose first dimension is the batch)."""
    if isinstance(value, Mapping):
        return {k: _slice(v, i, n) for k, v in value.items()}
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
        return value[i : i + 1]
    if isinstance(value, list) and len(value) == n:
        return value[i : i + 1]
    return value


def _to(value, device):
    if isinstance(value, Mapping):
        return {k: _to(v, device) for k, v in value.items()}
    return value.to(device) if isinstance(value, torch.Tensor) else value
