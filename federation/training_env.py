"""How a process that trains sites is set up: quiet Lightning logs, torch's thread count, the evaluation device, the local budget.

Shared by the in-process run (federation/driver/experiment.py), the deployed ClientApp and
ServerApp (federation/flower/), the scripts and benchmarks. It imports nothing of the
project, so a deployed site's process, started afresh for every message, gets it
without loading the experiment stack.
"""
from __future__ import annotations

import logging
import warnings

import torch
from omegaconf import DictConfig

from federation.threads import resolve_threads

QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric.utilities.seed")

EXPECTED_WARNINGS = (
    ".*validation_step.*no `val_dataloader`.*",  # sites validate the global model outside Lightning
    ".*module\\(s\\) in eval mode at the start of training.*",  # the frozen text encoder stays in eval mode
    ".*No positive samples in targets.*",  # small test sets lack most diseases; metrics.py handles it
    ".*isinstance\\(treespec, LeafSpec\\).*",
    ".*NvImgCodecPydicomReader.*",  # MONAI's optional GPU DICOM decoder is not installed; pydicom decodes
)


def quiet_lightning() -> None:
    """Lightning announces devices and parameter counts at every fit; a run does hundreds of fits."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def use_threads(setting) -> None:
    """`torch_threads` applied (federation/threads.py): a number, null (torch's default) or auto."""
    threads = resolve_threads(setting)
    if threads:
        torch.set_num_threads(threads)


def evaluation_device(accelerator: str) -> str:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def local_limits(federation: DictConfig) -> dict:
    """Per-round local training budget: `local_steps` optimizer steps if set, else `local_epochs` epochs."""
    if federation.get("local_steps"):
        return {"max_steps": int(federation.local_steps), "max_epochs": -1}
    return {"max_epochs": int(federation.local_epochs)}
