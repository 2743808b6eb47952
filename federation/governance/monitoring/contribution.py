"""Each site's contribution to a round: how much worse the aggregate is without its update (leave-one-out).

Leave-one-out is the simplest data-valuation method for federated learning (see
Wang et al. 2020, "A Principled Approach to Data Valuation for Federated
Learning"): value(site) = metric(aggregate of all) - metric(aggregate without
the site). Positive: the site helped; negative: the round would have been better
without it, which over several rounds points at a site whose updates degrade the
model. It costs one aggregation and one evaluation per site.

The aggregates are built with the strategy's pure `combine` and a plain step of
`server_lr`, so a stateful server optimiser (FedOpt's moments) is not advanced by
the what-if aggregates.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from federation.state import StateDict
from federation.update import ModelUpdate

log = logging.getLogger(__name__)


def _step(previous: StateDict, deltas: dict[str, torch.Tensor], server_lr: float) -> StateDict:
    state = dict(previous)
    for key, delta in deltas.items():
        state[key] = previous[key] + server_lr * delta.to(previous[key].dtype)
    return state


def leave_one_out(
    combine: Callable[[list[ModelUpdate]], dict[str, torch.Tensor]],
    previous_state: StateDict,
    updates: list[ModelUpdate],
    evaluate: Callable[[StateDict], float],
    server_lr: float = 1.0,
) -> dict[str, float]:
    """Per site: evaluate(all updates) - evaluate(all but this site's); the last one left is compared with no update."""
    if not updates:
        return {}
    full = evaluate(_step(previous_state, combine(updates), server_lr))
    out = {}
    for update in updates:
        rest = [u for u in updates if u is not update]
        try:
            without = evaluate(_step(previous_state, combine(rest), server_lr)) if rest else evaluate(previous_state)
        except ValueError as err:  # e.g. Krum needs more sites than remain
            log.warning("leave-one-out for site %r: cannot aggregate without it (%s)", update.site, err)
            without = float("nan")
        out[update.site] = full - without
    return out
