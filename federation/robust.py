"""The arithmetic of robust aggregation, as small pure functions the robust strategies call.

Median and trimmed mean work on the tensors that the sites sent for one key; Krum
scores whole updates; norm bounding clips one update. Only the weighted median looks
at sample counts, and only when a consortium asks for it: a count is something an
attacker could inflate.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from federation.update import ModelUpdate


def coordinate_median(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Coordinate-wise median; with an even count, the mean of the two middle values."""
    ordered = torch.stack([t.double() for t in tensors]).sort(dim=0).values
    n = len(tensors)
    middle = ordered[(n - 1) // 2 : n // 2 + 1]
    return middle.mean(dim=0)


def weighted_coordinate_median(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Coordinate-wise weighted median: per coordinate, the value at which half the total weight is reached.

    Where the cumulative weight lands exactly on half, the mean of the two values either
    side, so equal weights give `coordinate_median` exactly.
    """
    if len(tensors) != len(weights) or any(w < 0 for w in weights) or not sum(weights) > 0:
        raise ValueError(f"need one non-negative weight per tensor with a positive sum, got {list(weights)} for {len(tensors)}")
    values, order = torch.stack([t.double() for t in tensors]).sort(dim=0)
    cumulative = torch.tensor([float(w) for w in weights], dtype=torch.float64)[order].cumsum(dim=0)
    half, last = cumulative[-1:] / 2, len(tensors) - 1
    tolerance = 1e-12 * cumulative[-1:]
    below = (cumulative < half - tolerance).sum(dim=0, keepdim=True).clamp(max=last)
    through = (cumulative <= half + tolerance).sum(dim=0, keepdim=True).clamp(max=last)
    return ((values.gather(0, below) + values.gather(0, through)) / 2).squeeze(0)


def trimmed_mean(tensors: Sequence[torch.Tensor], trim_fraction: float, at_least: int = 0) -> torch.Tensor:
    """Coordinate-wise mean after dropping the k largest and smallest values.

    k = floor(trim_fraction * n), but at least `at_least` (the f attackers to trim), and
    never so many that nothing is left.
    """
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    n = len(tensors)
    k = min(max(int(trim_fraction * n), at_least), (n - 1) // 2)
    ordered = torch.stack([t.double() for t in tensors]).sort(dim=0).values
    return ordered[k : n - k].mean(dim=0)


def shared_keys(updates: Sequence[ModelUpdate]) -> list[str]:
    """The keys every update contains, sorted so flattening is the same for every update."""
    keys = set(updates[0].deltas)
    for update in updates[1:]:
        keys &= set(update.deltas)
    return sorted(keys)


def flatten(deltas: Mapping[str, torch.Tensor], keys: Sequence[str]) -> torch.Tensor:
    return torch.cat([deltas[k].double().reshape(-1) for k in keys])


def krum_scores(vectors: Sequence[torch.Tensor], n_byzantine: int) -> torch.Tensor:
    """Per vector, the sum of squared distances to its n - f - 2 nearest others (Blanchard et al. 2017).

    With too few vectors for that, at least one neighbour (and at most all others) is used.
    """
    n = len(vectors)
    if n == 1:
        return torch.zeros(1, dtype=torch.float64)
    stacked = torch.stack([v.double() for v in vectors])
    squared = torch.cdist(stacked, stacked, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    n_neighbours = min(max(n - n_byzantine - 2, 1), n - 1)
    squared.fill_diagonal_(float("inf"))
    return squared.sort(dim=1).values[:, :n_neighbours].sum(dim=1)


def norm_over(deltas: Mapping[str, torch.Tensor], keys: Iterable[str]) -> float:
    """L2 norm of the deltas of `keys` only, taken as one vector."""
    return float(sum(float((deltas[k].double() ** 2).sum()) for k in keys) ** 0.5)


def clip_to_norm(deltas: Mapping[str, torch.Tensor], max_norm: float) -> dict[str, torch.Tensor]:
    """Scale the whole update down so its L2 norm is at most max_norm; shorter updates are unchanged."""
    norm = torch.sqrt(sum((d.double() ** 2).sum() for d in deltas.values()))
    scale = min(1.0, max_norm / float(norm)) if float(norm) > 0 else 1.0
    return {key: (d.double() * scale).to(d.dtype) for key, d in deltas.items()}
