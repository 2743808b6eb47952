"""The arithmetic of aggregation, as small pure functions the strategies call."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch


def weighted_mean_per_key(
    updates: Iterable[tuple[Mapping[str, torch.Tensor], Mapping[str, float]]],
) -> dict[str, torch.Tensor]:
    """Per key, the weighted mean over only the updates that contain that key.

    This is what makes aggregation modality-aware: a site without imaging sends no
    imaging-encoder delta, so it neither dilutes nor votes on those weights.
    Streams over the updates, holding one running sum per key.
    """
    sums: dict[str, torch.Tensor] = {}
    totals: dict[str, float] = {}
    for deltas, weights in updates:
        for key, delta in deltas.items():
            weight = float(weights[key])
            if weight <= 0:
                continue
            contribution = delta.double() * weight
            sums[key] = sums[key] + contribution if key in sums else contribution
            totals[key] = totals.get(key, 0.0) + weight
    return {key: (total_sum / totals[key]).float() for key, total_sum in sums.items()}
