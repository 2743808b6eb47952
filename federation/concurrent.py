"""Several sites of one round trained at once in one process: threads, each with its own model replica.

Why: on a GPU, one small site's local epoch leaves most of the device idle (kernels
of a few thousand elements, launch-bound). Training k sites at once, each on its
own CUDA stream, lets their kernels overlap. torch releases the GIL inside its
kernels, so the threads also overlap on a many-core CPU.

Each worker takes a replica of the LightningModule (a deep copy, made once and
reused every round) and, on CUDA, a stream of its own; `Site.fit` loads the
round's global state into it, so replicas never carry state between sites. A
site is trained by one worker only, so its own state (FedBN's kept layers,
SCAFFOLD's control) is never touched by two threads.

Limits: `Site.fit` seeds torch's global generator, which the threads share, so
dropout and modality-dropout draws differ from a sequential run (the data order
does not: each loader has its own generator). Results are as valid, not
bit-identical.
"""
from __future__ import annotations

import contextlib
import copy
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import lightning as L
import torch

Result = TypeVar("Result")


class ReplicaPool:
    """Up to `size` (module replica, CUDA stream or None) pairs, lent to one thread at a time."""

    def __init__(self, module: L.LightningModule, size: int, device: str):
        if size < 1:
            raise ValueError(f"concurrent_sites must be at least 1, got {size}")
        self.module, self.size, self.device = module, size, device
        self._idle: queue.SimpleQueue = queue.SimpleQueue()

    def run(self, tasks: Sequence[int], work: Callable[[int, L.LightningModule], Result]) -> list[Result]:
        """`work(task, replica)` for every task, at most `size` at once; results in the order of `tasks`."""
        workers = min(self.size, len(tasks))
        if workers <= 1:
            return [work(task, self.module) for task in tasks]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="site") as pool:
            return list(pool.map(lambda task: self._lend(task, work), tasks))

    def _lend(self, task: int, work: Callable[[int, L.LightningModule], Result]) -> Result:
        replica, stream = self._take()
        try:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                result = work(task, replica)
            if stream is not None:
                stream.synchronize()  # the update's tensors are complete before another stream reads them
            return result
        finally:
            self._idle.put((replica, stream))

    def _take(self):
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            # at most `size` threads ever ask, so at most `size` replicas are made
            stream = torch.cuda.Stream() if self.device == "cuda" and torch.cuda.is_available() else None
            return replicate(self.module), stream


def replicate(module: L.LightningModule) -> L.LightningModule:
    """A deep copy of the module without the Trainer it was last fitted by (each fit attaches its own)."""
    trainer = getattr(module, "_trainer", None)
    return copy.deepcopy(module, {id(trainer): None} if trainer is not None else None)
