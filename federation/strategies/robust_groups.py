"""Robust rules under modality-aware aggregation: the round's suspects, and keys too few sites sent.

Each robust rule runs per key over only the sites that sent that key. A
coordinate-wise median or trimmed mean outvotes f Byzantine values only among at
least 2f + 1 (Yin et al. 2018, ICML); a key fewer sites sent (an imaging encoder
held by one honest site and one attacker) takes whatever the attacker sends. And
even among 2f + 1, an outvoted attacker still chooses which honest value is the
median: with sites as different as a consortium's, a far extreme on one side
shifts every coordinate towards it, round after round (on the synthetic
consortium a sign-flipping site cost the median 0.810 -> 0.675 this way).

So the rules first find the round's *suspects* on the keys every site sent, where
the rule's own aggregate is sound: of the f sites farthest from it, those farther
than `suspect_ratio` times the median site's distance (Krum ranks sites the same
way, by its score on the shared keys). The ratio keeps a clean round from losing an
honest site that is merely the most different (the largest site, whose update moves
most). With `exclude_suspects: all_keys` (the default) suspects are left out of
every key; with `thin_keys` only out of the keys fewer than 2f + 1 sites sent, the
rule outvoting them elsewhere. A key only suspects sent stays at its global value.
Every exclusion is returned with its reason, for the round's record.

Limitation: a site that is honest on the shared keys and attacks only a thin key
is not told apart this way; no rule can with two senders and nothing to compare.
"""
from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Mapping, Sequence

import torch

from federation.robust import flatten, shared_keys
from federation.strategies.base import check_option
from federation.update import ModelUpdate

log = logging.getLogger(__name__)
Rule = Callable[[list[torch.Tensor], list[float]], torch.Tensor]
"""A per-key rule: the senders' deltas and their sample counts (which unweighted rules ignore)."""
SCOPES = ("all_keys", "thin_keys")
NO_REFERENCE = "%d sites and f=%d: fewer than 2f + 1 share a parameter, so no suspect can be told apart; every key uses every sender"


def unweighted(rule: Callable[[list[torch.Tensor]], torch.Tensor]) -> Rule:
    """A rule of the deltas alone, as a `Rule` (the sample counts ignored)."""
    return lambda deltas, _counts: rule(deltas)


def senders_per_key(updates: Sequence[ModelUpdate]) -> dict[str, list[str]]:
    """Per key, the sites that sent it, in the updates' order."""
    return {key: [u.site for u in senders] for key, senders in updates_per_key(updates).items()}


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
    consensus = flatten({k: rule([u.deltas[k] for u in updates], [u.sample_counts[k] for u in updates]) for k in keys}, keys)
    distances = {u.site: float(torch.linalg.vector_norm(flatten(u.deltas, keys) - consensus)) for u in updates}
    ranked = sorted(distances, key=distances.get, reverse=True)
    closest_kept, typical = distances[ranked[n_byzantine]], statistics.median(distances.values())
    outlying = [s for s in ranked[:n_byzantine] if suspect_ratio is None or distances[s] > suspect_ratio * typical]
    return {
        site: f"among the {n_byzantine} farthest from the {what} on the {len(keys)} parameters every site sent "
        f"(distance {distances[site]:.4g}; median site {typical:.4g}; nearest site kept {closest_kept:.4g})"
        for site in outlying
    }


def combine_without_suspects(
    updates: Sequence[ModelUpdate], rule: Rule, n_byzantine: int, suspects: Mapping[str, str], scope: str = "all_keys"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Per key, `rule` over its senders less the suspects (scope `thin_keys`: only where fewer than 2f + 1 sent it).

    Returns the deltas and, per suspect left out of at least one key, the reason.
    """
    check_option("exclude_suspects", scope, SCOPES)
    combined: dict[str, torch.Tensor] = {}
    left_out: dict[str, int] = {}
    for key, senders in updates_per_key(updates).items():
        if scope == "all_keys" or len(senders) < 2 * n_byzantine + 1:
            for update in senders:
                if update.site in suspects:
                    left_out[update.site] = left_out.get(update.site, 0) + 1
            senders = [u for u in senders if u.site not in suspects]
        if senders:
            combined[key] = rule([u.deltas[key] for u in senders], [u.sample_counts[key] for u in senders])
    which = "a suspect of this round" if scope == "all_keys" else f"sent by fewer than {2 * n_byzantine + 1} sites"
    return combined, exclusion_reasons(updates, left_out, suspects, which)


def updates_per_key(updates: Sequence[ModelUpdate]) -> dict[str, list[ModelUpdate]]:
    """Per key, the updates that sent it, in the updates' order."""
    per_key: dict[str, list[ModelUpdate]] = {}
    for update in updates:
        for key in update.deltas:
            per_key.setdefault(key, []).append(update)
    return per_key


def exclusion_reasons(updates: Sequence[ModelUpdate], left_out: Mapping[str, int], why: Mapping[str, str], which: str) -> dict[str, str]:
    """Per site left out of some keys: how many of its keys, which ones, and why."""
    sent = {u.site: len(u.deltas) for u in updates}
    reasons = {site: f"left out of {n} of its {sent[site]} parameters ({which}): {why[site]}" for site, n in left_out.items()}
    for site, reason in reasons.items():
        log.info("robust aggregation: site %r %s", site, reason)
    return reasons
