"""Which parameters DP-SGD trains: the private part only, with the public parts frozen.

Noise in DP-SGD is added to every trained coordinate at the same scale, while the
clipped signal is shared among them, so the signal-to-noise ratio of a step falls
with the square root of the number of trained parameters (Tramèr & Boneh 2021,
"Differentially Private Learning Needs Better Features (or Much More Data)", ICLR;
Yu et al. 2022, "Differentially Private Fine-tuning of Language Models", ICLR).
Parts that carry no patient information (the pretrained text encoder, the
ontology-aware term embeddings at their data-independent initialisation, the
imaging backbone's random features, the gene table) cost nothing to keep as they
are; training them privately spends the budget on noise. `freeze` lists glob
patterns over parameter names (`encoders.phenotypes.term_embedding.*`); what is
left is the private part, the only thing DP-SGD updates and the site sends.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase

from torch import nn

from federation.settings import ConfigError


class NothingTrainable(ConfigError):
    """The freeze patterns leave no trainable parameter: DP-SGD would send nothing (a refused setting, exit status 2)."""


def frozen_names(model: nn.Module, patterns: Iterable[str]) -> set[str]:
    """Names of the trainable parameters that match any of `patterns` (fnmatch globs)."""
    patterns = list(patterns or ())
    return {n for n, p in model.named_parameters() if p.requires_grad and any(fnmatchcase(n, pat) for pat in patterns)}


def private_parameter_count(model: nn.Module, patterns: Iterable[str]) -> int:
    """Parameters DP-SGD trains under `patterns`: the trainable ones not frozen."""
    frozen = frozen_names(model, patterns)
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n not in frozen)


def check_trainable(model: nn.Module, patterns: Iterable[str], setting: str = "privacy.freeze") -> int:
    """The private part's size; refuses a freeze list that leaves nothing to train, naming the setting."""
    count = private_parameter_count(model, patterns)
    if count == 0:
        raise NothingTrainable(setting, list(patterns or ()), "freezes every trainable parameter of the model; DP-SGD would train nothing")
    return count


@contextmanager
def frozen(model: nn.Module, patterns: Iterable[str]) -> Iterator[int]:
    """Freeze the matching parameters for the duration (requires_grad False), then restore; yields the private size."""
    count = check_trainable(model, patterns)
    names = frozen_names(model, patterns)
    params = [p for n, p in model.named_parameters() if n in names]
    for p in params:
        p.requires_grad_(False)
    try:
        yield count
    finally:
        for p in params:
            p.requires_grad_(True)


def fix_frozen_modules(model: nn.Module) -> None:
    """Submodules with no trainable parameter left run in eval mode: fixed feature extractors.

    No dropout there, and BatchNorm normalises with its running statistics (data-
    independent while frozen) instead of mixing patients and updating buffers that
    would travel in the update: a frozen BatchNorm backbone is DP-compatible.
    Called after `model.train()`; the next `model.train(mode)` undoes it.
    """
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()
