"""Which tensors of a model travel between a site and the coordinator.

Only what a site can change travels: trainable parameters and the floating-point
buffers of modules that have trainable parameters (e.g. batch-norm statistics).
Frozen parameters (a frozen text encoder) never leave the site.
"""
from __future__ import annotations

import torch
from torch import nn

StateDict = dict[str, torch.Tensor]


def trainable_keys(model: nn.Module) -> list[str]:
    keys = [name for name, p in model.named_parameters() if p.requires_grad]
    for module_name, module in model.named_modules():
        if not any(p.requires_grad for p in module.parameters(recurse=False)):
            continue
        for buffer_name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and buffer.is_floating_point() and buffer_name in module.state_dict():
                keys.append(f"{module_name}.{buffer_name}" if module_name else buffer_name)
    return sorted(set(keys))


def get_state(model: nn.Module, keys: list[str]) -> StateDict:
    """A detached CPU copy of the named tensors."""
    full = model.state_dict()
    return {k: full[k].detach().to("cpu", copy=True) for k in keys}


def set_state(model: nn.Module, state: StateDict) -> None:
    """Load a partial state (only the travelling tensors); every key must exist in the model."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise KeyError(f"state has keys the model does not: {unexpected[:5]}")


NORMALISATION_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def normalisation_keys(model: nn.Module) -> set[str]:
    """State keys (parameters and buffers) of normalisation layers: what FedBN keeps at each site."""
    keys = set()
    for module_name, module in model.named_modules():
        if isinstance(module, NORMALISATION_LAYERS):
            prefix = f"{module_name}." if module_name else ""
            keys.update(prefix + name for name in module.state_dict())
    return keys
