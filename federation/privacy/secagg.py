"""Dropout-tolerant secure aggregation, modality-aware.

Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving Machine
Learning" (CCS), the semi-honest protocol of its Figure 4. Each site adds to its
fixed-point update a self-mask PRG(b_i) and, for every peer j, a pairwise mask
±PRG(s_ij) from X25519 key agreement; pairwise masks cancel in the sum. Both b_i and
the mask private key are Shamir-shared t-of-n, so once any t sites answer the
coordinator can strip the self-masks of sites that sent and the pairwise masks of
sites that dropped after sharing: up to n - t dropouts are tolerated, more fail.

Modality-aware: parameters are grouped by the set of sites that hold them (every
site holding imaging sends the imaging encoder). Masks run only among a group's
holders, so each key's sum is over its own holders, and the per-key sample
counts are summed in the same masked vector. The coordinator only ever handles
public keys, ciphertexts, masked vectors and the shares it asks for.

Semi-honest model: we check what an honest site can check (its own key in the
roster, a strict-majority threshold, never revealing both secrets of one peer),
but not the consistency round Bonawitz et al. add against an active coordinator.
Sites and coordinator are separate objects exchanging the dataclasses of
`messages.py`; `secure_sum` drives the four steps over any `ProtocolSites`: the
sites in this process (`LocalSites`, the in-process engine) or at the other end
of Flower messages (federation/flower/secagg.py), so both run this one protocol.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from federation.privacy import crypto, shamir
from federation.privacy.fixed_point import FixedPointCodec
from federation.privacy.messages import (
    Group,
    KeyAdvert,
    MaskedInput,
    Roster,
    RoutedShares,
    ShareBundle,
    UnmaskRequest,
    UnmaskResponse,
)

log = logging.getLogger(__name__)
SMALL_GROUP = "secure aggregation, round %d: parameters %s have %d surviving holder(s), fewer than min_group_size=%d; their sum would reveal a site's update, so they are left unchanged this round"
STAGES = ("advertise", "share", "mask", "unmask")


class SecAggError(RuntimeError):
    """The protocol cannot finish (too many dropouts) or a party broke it."""


def resolve_threshold(threshold: int | float, n_sites: int) -> int:
    """t from an absolute count (int) or a fraction of the roster (float); a strict majority is required.

    t > n/2 means two disjoint sets of sites can never both reach t, so a coordinator
    that tells some sites "i dropped" and others "i survived" cannot collect both of i's secrets.
    """
    t = threshold if isinstance(threshold, int) else math.ceil(float(threshold) * n_sites - 1e-9)
    if not n_sites // 2 < t <= n_sites:
        raise ValueError(f"secure aggregation threshold {threshold!r} gives t={t} for {n_sites} sites; t must be in ({n_sites / 2:g}, {n_sites}]")
    return t


def group_keys(adverts: Sequence[KeyAdvert]) -> tuple[Group, ...]:
    """Parameters grouped by the exact set of sites that hold them; refuses a key sent with two shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    holders: dict[str, list[str]] = {}
    for advert in adverts:
        for key, shape in advert.keys.items():
            if shapes.setdefault(key, tuple(shape)) != tuple(shape):
                raise SecAggError(f"site {advert.site!r} announces {key!r} with shape {tuple(shape)}, others with {shapes[key]}")
            holders.setdefault(key, []).append(advert.site)
    by_holders: dict[tuple[str, ...], list[str]] = {}
    for key in sorted(holders):
        by_holders.setdefault(tuple(sorted(holders[key])), []).append(key)
    ordered = sorted(by_holders.items(), key=lambda item: item[1][0])
    return tuple(Group(i, tuple(keys), tuple(shapes[k] for k in keys), sites) for i, (sites, keys) in enumerate(ordered))


def _self_purpose(round_: int, group: int) -> str:
    return f"self-mask|round {round_}|group {group}"


def _pair_purpose(round_: int, group: int) -> str:
    return f"pair-mask|round {round_}|group {group}"


def _share_key_purpose(round_: int) -> str:
    return f"share-encryption|round {round_}"


def _associated(round_: int, sender: str, receiver: str) -> bytes:
    return f"{round_}|{sender}|{receiver}".encode()


class SecAggClient:
    """A site's side: holds its update and its secrets; answers each protocol step with one message."""

    def __init__(self, site: str, deltas: Mapping[str, torch.Tensor], counts: Mapping[str, int]):
        self.site = site
        self.deltas = dict(deltas)
        self.counts = {k: int(counts[k]) for k in deltas}
        self.clipped = False

    def advertise(self, round_: int) -> KeyAdvert:
        self.round = round_
        self._cipher_keys, self._mask_keys = crypto.KeyPair.generate(), crypto.KeyPair.generate()
        self._seed = os.urandom(crypto.KEY_BYTES)  # b_i, the self-mask seed
        self._revealed_seed: set[str] = set()
        self._revealed_key: set[str] = set()
        keys = {k: tuple(d.shape) for k, d in self.deltas.items()}
        return KeyAdvert(self.site, round_, self._cipher_keys.public, self._mask_keys.public, keys)

    def share_keys(self, roster: Roster) -> ShareBundle:
        self._check_roster(roster)
        self.roster = roster
        self.codec = FixedPointCodec(len(roster.sites), roster.clip, roster.precision_bits, roster.max_count)
        points = [roster.point(s) for s in roster.sites]
        seed_shares = shamir.split(self._seed, roster.threshold, points)
        key_shares = shamir.split(self._mask_keys.private, roster.threshold, points)
        mine = roster.point(self.site)
        self._held = {self.site: (seed_shares[mine], key_shares[mine])}
        ciphertexts = {}
        for peer in roster.sites:
            if peer == self.site:
                continue
            point = roster.point(peer)
            key = crypto.agree(self._cipher_keys.private, roster.cipher_public[peer], _share_key_purpose(self.round))
            plaintext = seed_shares[point].to_bytes() + key_shares[point].to_bytes()
            ciphertexts[peer] = crypto.encrypt(key, plaintext, _associated(self.round, self.site, peer))
        return ShareBundle(self.site, self.round, ciphertexts)

    def receive_shares(self, routed: RoutedShares) -> None:
        """Decrypt the shares peers sent through the coordinator; those peers are U2, the ones to mask with."""
        mine = self.roster.point(self.site)
        for source, ciphertext in routed.ciphertexts.items():
            key = crypto.agree(self._cipher_keys.private, self.roster.cipher_public[source], _share_key_purpose(self.round))
            plaintext = crypto.decrypt(key, ciphertext, _associated(self.round, source, self.site))
            seed, mask_key = plaintext[: shamir.SHARE_BYTES], plaintext[shamir.SHARE_BYTES :]
            self._held[source] = (shamir.Share.from_bytes(mine, seed), shamir.Share.from_bytes(mine, mask_key))
        self._u2 = set(routed.ciphertexts) | {self.site}
        if len(self._u2) < self.roster.threshold:
            raise SecAggError(f"site {self.site!r}: only {len(self._u2)} sites shared keys, fewer than t={self.roster.threshold}; aborting")

    def masked_input(self) -> MaskedInput:
        """y_i = encode(x_i) + PRG(b_i) + sum_j ±PRG(s_ij) per group, j over the group's holders in U2."""
        scaled = self._clipped_deltas()
        vectors = {}
        for group in self.roster.groups:
            if self.site not in group.holders:
                continue
            dtype = self.codec.dtype
            weighted = np.concatenate([scaled[k].reshape(-1) * self.counts[k] for k in group.keys])
            y = self.codec.encode(weighted, np.array([self.counts[k] for k in group.keys]))
            y = y + crypto.prg(crypto.derive(self._seed, _self_purpose(self.round, group.id)), group.length, dtype)
            for peer in group.holders:
                if peer == self.site or peer not in self._u2:
                    continue
                seed = crypto.agree(self._mask_keys.private, self.roster.mask_public[peer], _pair_purpose(self.round, group.id))
                mask = crypto.prg(seed, group.length, dtype)
                y = y + mask if self.site < peer else y - mask
            vectors[group.id] = y
        return MaskedInput(self.site, self.round, vectors)

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Reveal b-shares of survivors and key-shares of the dropped, never both for one peer."""
        survivors, dropped = set(request.survivors), set(request.dropped)
        problems = []
        if survivors & dropped:
            problems.append(f"sites both survived and dropped: {sorted(survivors & dropped)}")
        if not (survivors | dropped) <= self._u2:
            problems.append(f"sites that never shared keys: {sorted((survivors | dropped) - self._u2)}")
        if len(survivors) < self.roster.threshold:
            problems.append(f"{len(survivors)} survivors, fewer than t={self.roster.threshold}")
        if survivors & self._revealed_key or dropped & self._revealed_seed:
            problems.append("a second, contradicting unmasking request")
        if problems:
            raise SecAggError(f"site {self.site!r} refuses to unmask round {request.round}: " + "; ".join(problems))
        self._revealed_seed |= survivors
        self._revealed_key |= dropped
        seeds = {s: self._held[s][0].to_bytes() for s in sorted(survivors)}
        keys = {s: self._held[s][1].to_bytes() for s in sorted(dropped)}
        return UnmaskResponse(self.site, request.round, seeds, keys)

    def state_dict(self) -> dict:
        """This half between two steps: the update and the secrets, which never leave the site.

        A deployed site answers each step in a fresh process (Flower), so it keeps this
        in its node's run state and resumes with `from_state_dict`.
        """
        state = {"site": self.site, "round": self.round, "deltas": dict(self.deltas), "counts": dict(self.counts), "clipped": self.clipped,
                 "cipher_keys": self._cipher_keys, "mask_keys": self._mask_keys, "seed": self._seed,
                 "revealed_seed": sorted(self._revealed_seed), "revealed_key": sorted(self._revealed_key)}
        if hasattr(self, "roster"):
            state |= {"roster": self.roster, "held": {s: (a.to_bytes(), b.to_bytes()) for s, (a, b) in self._held.items()}}
        if hasattr(self, "_u2"):
            state["u2"] = sorted(self._u2)
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping) -> SecAggClient:
        client = cls(state["site"], state["deltas"], state["counts"])
        client.round, client.clipped, client._seed = int(state["round"]), bool(state["clipped"]), state["seed"]
        client._cipher_keys, client._mask_keys = state["cipher_keys"], state["mask_keys"]
        client._revealed_seed, client._revealed_key = set(state["revealed_seed"]), set(state["revealed_key"])
        if "roster" in state:
            client.roster = state["roster"]
            client.codec = FixedPointCodec(len(client.roster.sites), client.roster.clip, client.roster.precision_bits, client.roster.max_count)
            point = client.roster.point(client.site)
            client._held = {s: (shamir.Share.from_bytes(point, a), shamir.Share.from_bytes(point, b)) for s, (a, b) in state["held"].items()}
        if "u2" in state:
            client._u2 = set(state["u2"])
        return client

    def _check_roster(self, roster: Roster) -> None:
        if roster.mask_public.get(self.site) != self._mask_keys.public or roster.cipher_public.get(self.site) != self._cipher_keys.public:
            raise SecAggError(f"site {self.site!r}: the roster does not carry this site's own public keys")
        resolve_threshold(roster.threshold, len(roster.sites))
        held = {k for g in roster.groups if self.site in g.holders for k in g.keys}
        if held != set(self.deltas):
            raise SecAggError(f"site {self.site!r}: the roster's groups give it keys {sorted(held ^ set(self.deltas))[:5]} it did not announce")

    def _clipped_deltas(self) -> dict[str, np.ndarray]:
        """The update scaled to L2 norm <= clip, so every coordinate lies within the codec's bound."""
        arrays = {k: d.detach().double().cpu().numpy() for k, d in self.deltas.items()}
        norm = math.sqrt(sum(float((a**2).sum()) for a in arrays.values()))
        scale = min(1.0, self.roster.clip / norm) if norm > 0 else 1.0
        self.clipped = scale < 1.0
        return {k: a * scale for k, a in arrays.items()}


@dataclass
class SecureSum:
    """What the coordinator learns: per key, the sum of count * delta over the surviving holders, and of counts."""

    weighted: dict[str, torch.Tensor]
    counts: dict[str, int]
    sites: tuple[str, ...] = ()
    """The sites whose inputs are in the sums (U3: sent a masked input and were unmasked)."""

    def means(self) -> dict[str, torch.Tensor]:
        return {k: (s / self.counts[k]).float() for k, s in self.weighted.items() if self.counts[k] > 0}


class SecAggServer:
    """The coordinator's side: builds the roster, relays ciphertexts, asks for shares, removes the masks."""

    def __init__(self, threshold: int | float = 0.6, clip: float = 100.0, precision_bits: int = 20, max_count: int = 1_000_000, min_group_size: int = 2):
        self.last_roster: Roster | None = None
        self.threshold, self.clip, self.precision_bits, self.max_count = threshold, clip, precision_bits, max_count
        self.min_group_size = min_group_size

    def roster(self, adverts: Sequence[KeyAdvert], round_: int) -> Roster:
        sites = tuple(sorted(a.site for a in adverts))
        if len(set(sites)) != len(sites):
            raise SecAggError(f"round {round_}: a site advertised twice: {sites}")
        t = resolve_threshold(self.threshold, len(sites))
        FixedPointCodec(len(sites), self.clip, self.precision_bits, self.max_count)  # refuse an overflowing setting up front
        self._roster = Roster(
            round_, sites, {a.site: a.cipher_public for a in adverts}, {a.site: a.mask_public for a in adverts},
            group_keys(adverts), t, self.clip, self.precision_bits, self.max_count,
        )
        self.last_roster = self._roster
        return self._roster

    def route(self, bundles: Sequence[ShareBundle]) -> dict[str, RoutedShares]:
        self._u2 = {b.site for b in bundles}
        self._require(len(self._u2), "shared keys", "share")
        return {
            site: RoutedShares(self._roster.round, {b.site: b.ciphertexts[site] for b in bundles if site in b.ciphertexts})
            for site in sorted(self._u2)
        }

    def unmask_request(self, inputs: Sequence[MaskedInput]) -> UnmaskRequest:
        codec = FixedPointCodec(len(self._roster.sites), self.clip, self.precision_bits, self.max_count)
        for masked in inputs:
            self._check_masked(masked, codec)
        self._inputs = {m.site: m for m in inputs}
        self._require(len(self._inputs), "sent masked inputs", "mask")
        self._codec = codec
        return UnmaskRequest(self._roster.round, tuple(sorted(self._inputs)), tuple(sorted(self._u2 - set(self._inputs))))

    def unmask(self, responses: Sequence[UnmaskResponse]) -> SecureSum:
        self._require(len(responses), "answered the unmasking step", "unmask")
        roster = self._roster
        seeds = {j: self._reconstruct(responses, j, "seed_shares") for j in self._inputs}
        keys = {j: self._reconstruct(responses, j, "key_shares") for j in self._u2 - set(self._inputs)}
        weighted, counts = {}, {}
        for group in roster.groups:
            members = [s for s in group.holders if s in self._inputs]
            if len(members) < max(self.min_group_size, 1):
                if members:
                    log.warning(SMALL_GROUP, roster.round, list(group.keys)[:3], len(members), self.min_group_size)
                continue
            total = self._unmasked_total(group, members, seeds, keys)
            sums, key_counts = self._codec.decode(total, len(group.keys))
            offsets = np.cumsum([0, *group.sizes])
            for i, (key, shape) in enumerate(zip(group.keys, group.shapes)):
                weighted[key] = torch.from_numpy(sums[offsets[i] : offsets[i + 1]].copy()).reshape(shape)
                counts[key] = int(key_counts[i])
        return SecureSum(weighted, counts, tuple(sorted(self._inputs)))

    def _unmasked_total(self, group: Group, members: list[str], seeds: dict[str, bytes], keys: dict[str, bytes]) -> np.ndarray:
        dtype, round_ = self._codec.dtype, self._roster.round
        total = np.zeros(group.length, dtype=dtype)
        for site in members:
            total = total + self._inputs[site].vectors[group.id]
            total = total - crypto.prg(crypto.derive(seeds[site], _self_purpose(round_, group.id)), group.length, dtype)
        for gone in (s for s in group.holders if s in keys):
            for site in members:
                seed = crypto.agree(keys[gone], self._roster.mask_public[site], _pair_purpose(round_, group.id))
                mask = crypto.prg(seed, group.length, dtype)
                total = total - mask if site < gone else total + mask  # undo what `site` added for `gone`
        return total

    def _reconstruct(self, responses: Sequence[UnmaskResponse], owner: str, field: str) -> bytes:
        shares = [shamir.Share.from_bytes(self._roster.point(r.site), getattr(r, field)[owner]) for r in responses if owner in getattr(r, field)]
        return shamir.combine(shares, self._roster.threshold, crypto.KEY_BYTES)

    def _check_masked(self, masked: MaskedInput, codec: FixedPointCodec) -> None:
        expected = {g.id: g for g in self._roster.groups if masked.site in g.holders}
        if masked.site not in self._u2 or set(masked.vectors) != set(expected):
            raise SecAggError(f"round {self._roster.round}: masked input from {masked.site!r} has groups {sorted(masked.vectors)}, expected {sorted(expected)}")
        for gid, vector in masked.vectors.items():
            if vector.dtype != codec.dtype or vector.shape != (expected[gid].length,):
                raise SecAggError(f"round {self._roster.round}: masked group {gid} from {masked.site!r} is {vector.dtype}{vector.shape}, expected {codec.dtype}({expected[gid].length},)")

    def _require(self, answered: int, what: str, stage: str) -> None:
        n, t = len(self._roster.sites), self._roster.threshold
        if answered < t:
            raise SecAggError(
                f"secure aggregation failed in round {self._roster.round} at the {stage!r} step: only {answered} of {n} sites {what}, "
                f"but t={t} are needed to remove the masks (at most n - t = {n - t} dropouts are tolerated); this round has no aggregate"
            )


Observer = Callable[[str, object], None]


class ProtocolSites(Protocol):
    """The sites as the coordinator reaches them: each step asks every site concerned and returns the answers that came.

    A site that does not answer a step has dropped out; `secure_sum` recovers it or fails.
    """

    def advertise(self, round_: int) -> list[KeyAdvert]: ...

    def share(self, roster: Roster) -> list[ShareBundle]: ...

    def mask(self, routed: Mapping[str, RoutedShares]) -> list[MaskedInput]: ...

    def unmask(self, request: UnmaskRequest) -> list[UnmaskResponse]: ...


def secure_sum(sites: ProtocolSites, server: SecAggServer, round_: int) -> SecureSum:
    """The four steps of Figure 4 (advertise, share, mask, unmask), whatever carries the messages."""
    roster = server.roster(sites.advertise(round_), round_)
    routed = server.route(sites.share(roster))
    request = server.unmask_request(sites.mask(routed))
    return server.unmask(sites.unmask(request))


class LocalSites:
    """The sites' halves in this process, each answering through its own SecAggClient.

    `dropouts`: site -> the step it no longer answers ('share', 'mask' or 'unmask'),
    to simulate sites that leave mid-round. `observe(site, message)` sees every
    message a site sends (the coordinator's whole view, and what the egress check checks).
    """

    def __init__(self, clients: Sequence[SecAggClient], dropouts: Mapping[str, str] | None = None, observe: Observer | None = None):
        dropouts = dict(dropouts or {})
        unknown = set(dropouts.values()) - set(STAGES[1:])
        if unknown:
            raise ValueError(f"unknown dropout steps {sorted(unknown)}; known: {STAGES[1:]}")
        self.clients = list(clients)
        self.last = {site: STAGES.index(stage) for site, stage in dropouts.items()}
        self.observe = observe or (lambda site, message: None)

    def advertise(self, round_: int) -> list[KeyAdvert]:
        return [self._send(c, c.advertise(round_)) for c in self.clients]

    def share(self, roster: Roster) -> list[ShareBundle]:
        return [self._send(c, c.share_keys(roster)) for c in self._answering("share")]

    def mask(self, routed: Mapping[str, RoutedShares]) -> list[MaskedInput]:
        for client in self._answering("mask"):
            client.receive_shares(routed[client.site])
        return [self._send(c, c.masked_input()) for c in self._answering("mask")]

    def unmask(self, request: UnmaskRequest) -> list[UnmaskResponse]:
        survivors = set(request.survivors)
        return [self._send(c, c.unmask(request)) for c in self._answering("unmask") if c.site in survivors]

    def _answering(self, stage: str) -> list[SecAggClient]:
        return [c for c in self.clients if STAGES.index(stage) < self.last.get(c.site, len(STAGES))]

    def _send(self, client: SecAggClient, message):
        self.observe(client.site, message)
        return message


def run_secure_aggregation(
    clients: Sequence[SecAggClient], server: SecAggServer, round_: int,
    dropouts: Mapping[str, str] | None = None, observe: Observer | None = None,
) -> SecureSum:
    """Run the four steps in-process, passing messages between separate site and coordinator objects (see `LocalSites`)."""
    return secure_sum(LocalSites(clients, dropouts, observe), server, round_)
