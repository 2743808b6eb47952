"""Robust rules under modality-aware aggregation: what to do with a parameter too few sites sent.

Each robust rule runs per key over only the sites that sent that key. A
coordinate-wise median or trimmed mean outvotes f Byzantine values only among at
least 2f + 1 (Yin et al. 2018, ICML); a key fewer sites sent (an imaging encoder
held by one honest site and one attacker) takes whatever the attacker sends. Such
*thin* keys borrow trust from the keys every site sent: there the rule's own
aggregate is sound, and of the f sites farthest from it, those farther than
`suspect_ratio` times the median site's distance are the round's suspects (Krum
ranks sites the same way, by its score on the shared keys). The ratio keeps a
clean round from losing an honest site that is merely the most different (the
largest site, whose update moves most) on the keys only it and one other hold. A thin key is
combined over its other senders, and stays at the global value when only
suspects sent it. Every exclusion is returned with its reason, for the round's record.

Limitation: a site that is honest on the shared keys and attacks only a thin key
is not told apart this way; no rule can with two senders and nothing to compare.
"""
from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Mapping, Sequence

import torch

from federation.robust import deltas_per_key, flatten, shared_keys
from federation.update import ModelUpdate

log = logging.getLogger(__name__)
Rule = Callable[[list[torch.Tensor]], torch.Tensor]
NO_REFERENCE = "%d sites and f=%d: fewer than 2f + 1 share a parameter, so no suspect can be told apart; thin keys use every sender"


def senders_per_key(updates: Sequence[ModelUpdate]) -> dict[str, list[str]]:
    """Per key, the sites that sent it, in the updates' order."""
    senders: dict[str, list[str]] = {}
    for update in updates:
        for key in update.deltas:
            senders.setdefault(key, []).append(update.site)
    return senders


def farthest_from(
    rule: Rule, updates: Sequence[ModelUpdate], n_byzantine: int, what: str, suspect_ratio: float | None = 3.0
) -> dict[str, str]:
    """Of the n_byzantine sites farthest (L2, over the keys every site sent) from `rule`'s aggregate there,
    those more than `suspect_ratio` times the median distance away (None: all f), each with why.

    Empty when fewer than 2f + 1 updates (the reference aggregate would not be robust) or no shared key.
    """
    keys = shared_keys(updates) if updates else []
    if n_byzantine == 0 or not keys or len(updates) < 2 * n_byzantine + 1:
        if n_byzantine and updates:
            log.warning(NO_REFERENCE, len(updates), n_byzantine)
        return {}
    consensus = flatten({k: rule([u.deltas[k] for u in updates]) for k in keys}, keys)
    distances = {u.site: float(torch.linalg.vector_norm(flatten(u.deltas, keys) - consensus)) for u in updates}
    ranked = sorted(distances, key=distances.get, reverse=True)
    closest_kept, typical = distances[ranked[n_byzantine]], statistics.median(distances.values())
    outlying = [s for s in ranked[:n_byzantine] if suspect_ratio is None or distances[s] > suspect_ratio * typical]
    return {
        site: f"among the {n_byzantine} farthest from the {what} on the {len(keys)} parameters every site sent "
        f"(distance {distances[site]:.4g}; median site {typical:.4g}; nearest site kept {closest_kept:.4g})"
        for site in outlying
    }


def combine_with_thin_keys(
    updates: Sequence[ModelUpdate], rule: Rule, n_byzantine: int, suspects: Mapping[str, str]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Per key, `rule` over its senders; thin keys (fewer than 2f + 1 senders) over their non-suspect senders.

    Returns the deltas and, per suspect left out of at least one key, the reason.
    """
    per_key = deltas_per_key(updates)
    senders = senders_per_key(updates)
    combined: dict[str, torch.Tensor] = {}
    left_out: dict[str, int] = {}
    for key, deltas in per_key.items():
        if len(deltas) >= 2 * n_byzantine + 1:
            combined[key] = rule(deltas)
            continue
        kept = [d for site, d in zip(senders[key], deltas) if site not in suspects]
        for site in set(senders[key]) & set(suspects):
            left_out[site] = left_out.get(site, 0) + 1
        if kept:
            combined[key] = rule(kept)
    return combined, exclusion_reasons(updates, left_out, suspects, f"sent by fewer than {2 * n_byzantine + 1} sites")


def exclusion_reasons(updates: Sequence[ModelUpdate], left_out: Mapping[str, int], why: Mapping[str, str], which: str) -> dict[str, str]:
    """Per site left out of some keys: how many of its keys, which ones, and why."""
    sent = {u.site: len(u.deltas) for u in updates}
    reasons = {site: f"left out of {n} of its {sent[site]} parameters ({which}): {why[site]}" for site, n in left_out.items()}
    for site, reason in reasons.items():
        log.info("robust aggregation: site %r %s", site, reason)
    return reasons
