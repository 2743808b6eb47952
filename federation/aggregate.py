"""The arithmetic of aggregation: FedAvg's per-key weighted mean, at memory speed.

Modality-aware: each key is averaged over only the updates that contain it, so a
site without imaging sends no imaging-encoder delta and neither dilutes nor votes
on those weights.

Each delta is added into its key's running sum in place (an axpy:
`sum += weight * delta`), so every update is read once and nothing else is
allocated per update: the aggregator runs at about the machine's streaming
bandwidth and holds only the sums plus the update being read, whatever the number
of sites (benchmarks/perf_aggregation.py measures both against the bound, beside
the earlier float64 copy-per-update mean, which reached 4-18% of it).

The sums are float32 by default. Over N sites the rounding of a float32 running
sum grows like sqrt(N) float32 ulps (about 1e-6 relative at N = 100), far below
what a round's training noise moves a weight; pass `accumulate=torch.float64`
for an exact-as-float64 sum at twice the memory and about half the speed.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

Update = tuple[Mapping[str, torch.Tensor], Mapping[str, float]]


def weighted_mean_per_key(updates: Iterable[Update], accumulate: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Per key, the mean of the deltas weighted by their sample counts, over only the updates that contain that key.

    `updates`: (deltas, weights per key) pairs; a key with weight <= 0 is ignored.
    It may be a generator that makes each update on the fly: nothing here keeps a
    reference to an update once its deltas are added, so the peak memory is the
    running sums plus one update. The inputs are never modified; means are float32.
    """
    sums: dict[str, torch.Tensor] = {}
    totals: dict[str, float] = {}
    for deltas, weights in updates:
        _add_update(sums, totals, deltas, weights, accumulate)
        del deltas, weights  # released before the generator builds the next update
    # popping each sum as its mean is made keeps the peak at the sums, not sums plus means
    return {key: sums.pop(key).div_(totals[key]).float() for key in list(sums)}


def _add_update(sums: dict[str, torch.Tensor], totals: dict[str, float], deltas, weights, dtype: torch.dtype) -> None:
    for key, delta in deltas.items():
        weight = float(weights[key])
        if weight <= 0:
            continue
        if key in sums:
            sums[key].add_(delta, alpha=weight)
        else:  # the first delta of a key starts its sum: one allocation, a copy so the input stays untouched
            sums[key] = delta.to(dtype, copy=True).mul_(weight)
        totals[key] = totals.get(key, 0.0) + weight
