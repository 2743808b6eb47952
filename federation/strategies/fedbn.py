"""FedBN: every site keeps its own normalisation layers; everything else is averaged.

Li et al. 2021, "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization" (ICLR). Sites whose inputs differ in scanner, protocol or
population keep their batch-norm statistics and affine parameters local and never
send them (federation/site.py `keep_local`); the rest is FedAvg, modality-aware.
Each site evaluates the global model with its own normalisation layers.
"""
from __future__ import annotations

from federation.strategies.fedavg import FedAvg


class FedBN(FedAvg):
    def local_objective(self) -> dict:
        return {"keep_local": "normalisation"}
