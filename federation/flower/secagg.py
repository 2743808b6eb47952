"""Secure aggregation over Flower messages: the protocol of federation/privacy/secagg.py, its messages as records.

Bonawitz et al. 2017 (CCS), Figure 4, one Flower message round per step. The train
reply carries the site's key advert (step 0) instead of its update, which stays
at the site; then `train.secagg_share` (the roster out, encrypted shares back),
`train.secagg_mask` (each site's routed shares out, its masked vector back) and
`train.secagg_unmask` (who survived and who dropped out, shares back). The
coordinator drives the steps with `secure_sum` over `FlowerSites`, exactly as the
in-process engine drives them over `LocalSites`; a site that does not answer a
step has dropped out, and the Shamir shares recover it (or the round fails when
more than n - t drop).

Flower starts a fresh ClientApp process for every message, so a site's half
(`SecAggClient`: its update and its secrets) is kept between steps in the node's
run state (`context.state`), which never leaves the site.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from federation.flower.link import reply_problem
from federation.flower.records import (
    META,
    METRICS,
    MalformedMessage,
    record_to_state,
    state_to_record,
)
from federation.privacy import crypto, shamir
from federation.privacy.egress import SHARE_CIPHERTEXT
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
from federation.privacy.secagg import SecAggClient
from federation.strategies.secure_fedavg import site_weights
from federation.update import ModelUpdate

log = logging.getLogger(__name__)

SECAGG = "secagg"  # coordinator -> site in a train message: aggregate securely ({"weighting": samples | uniform})
ADVERT, ROSTER, SHARES, ROUTED, MASKED, VECTORS, REQUEST, UNMASK = (
    "secagg.advert", "secagg.roster", "secagg.shares", "secagg.routed", "secagg.masked", "secagg.vectors", "secagg.request", "secagg.unmask",
)
STEPS = ("share", "mask", "unmask")
MESSAGE_TYPES = {step: f"train.secagg_{step}" for step in STEPS}
CLIENT, DELTAS = "secagg.client", "secagg.deltas"  # the site's half, in its node's run state only


# ---------------------------------------------------------------- messages as records

def advert_content(advert: KeyAdvert, update: ModelUpdate) -> RecordDict:
    """The train reply under secure aggregation: the key advert, and what the round log needs (no update)."""
    keys = json.dumps({k: list(shape) for k, shape in advert.keys.items()}, sort_keys=True)
    return RecordDict({
        ADVERT: ConfigRecord({"site": advert.site, "round": advert.round, "keys": keys,
                              "cipher_public": advert.cipher_public, "mask_public": advert.mask_public}),
        META: ConfigRecord({"site": update.site, "round": int(update.round), "n_samples": int(update.n_samples)}),
        METRICS: MetricRecord({k: float(v) for k, v in update.metrics.items()}),
    })


def advert_from_content(content: RecordDict) -> KeyAdvert:
    record = _exactly(content, {ADVERT: ConfigRecord, META: ConfigRecord, METRICS: MetricRecord})[ADVERT]
    _fields(record, ADVERT, site=str, round=int, keys=str, cipher_public=bytes, mask_public=bytes)
    try:
        keys = {str(k): tuple(int(d) for d in shape) for k, shape in json.loads(record["keys"]).items()}
    except (ValueError, TypeError, AttributeError) as err:
        raise MalformedMessage(f"'{ADVERT}': keys are not a {{parameter: shape}} table: {err}") from err
    return KeyAdvert(record["site"], record["round"], record["cipher_public"], record["mask_public"], keys)


def report_from_content(content: RecordDict) -> tuple[int, dict[str, float]]:
    """What the train reply reports beside the advert: the site's training samples and its training metrics."""
    n_samples = content[META].get("n_samples")
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples <= 0:
        raise MalformedMessage(f"'{META}': n_samples is {n_samples!r}, expected a positive integer")
    return n_samples, {k: float(v) for k, v in content[METRICS].items()}


def roster_content(roster: Roster) -> RecordDict:
    groups = json.dumps([[g.id, list(g.keys), [list(s) for s in g.shapes], list(g.holders)] for g in roster.groups])
    return RecordDict({ROSTER: ConfigRecord({
        "round": roster.round, "sites": _names(roster.sites), "groups": groups, "threshold": roster.threshold, "clip": float(roster.clip),
        "precision_bits": roster.precision_bits, "max_count": roster.max_count,
        "cipher_public": b"".join(roster.cipher_public[s] for s in roster.sites), "mask_public": b"".join(roster.mask_public[s] for s in roster.sites),
    })})


def roster_from_content(content: RecordDict) -> Roster:
    record = _exactly(content, {ROSTER: ConfigRecord})[ROSTER]
    _fields(record, ROSTER, round=int, sites=str, groups=str, threshold=int, clip=float, precision_bits=int, max_count=int,
            cipher_public=bytes, mask_public=bytes)
    sites = tuple(_unnames(record, "sites"))
    try:
        groups = tuple(Group(int(i), tuple(keys), tuple(tuple(int(d) for d in s) for s in shapes), tuple(holders))
                       for i, keys, shapes, holders in json.loads(record["groups"]))
    except (ValueError, TypeError) as err:
        raise MalformedMessage(f"'{ROSTER}': unreadable groups: {err}") from err
    cipher, mask = (_unjoin(record, name, crypto.KEY_BYTES, len(sites)) for name in ("cipher_public", "mask_public"))
    return Roster(record["round"], sites, dict(zip(sites, cipher)), dict(zip(sites, mask)), groups,
                  record["threshold"], record["clip"], record["precision_bits"], record["max_count"])


def shares_content(bundle: ShareBundle) -> RecordDict:
    peers = sorted(bundle.ciphertexts)
    return RecordDict({SHARES: ConfigRecord({"site": bundle.site, "round": bundle.round, "peers": _names(peers),
                                             "ciphertexts": b"".join(bundle.ciphertexts[p] for p in peers)})})


def shares_from_content(content: RecordDict) -> ShareBundle:
    record = _exactly(content, {SHARES: ConfigRecord})[SHARES]
    _fields(record, SHARES, site=str, round=int, peers=str, ciphertexts=bytes)
    return ShareBundle(record["site"], record["round"], _pairs(record, "peers", "ciphertexts", SHARE_CIPHERTEXT))


def routed_content(routed: RoutedShares) -> RecordDict:
    senders = sorted(routed.ciphertexts)
    return RecordDict({ROUTED: ConfigRecord({"round": routed.round, "senders": _names(senders),
                                             "ciphertexts": b"".join(routed.ciphertexts[s] for s in senders)})})


def routed_from_content(content: RecordDict) -> RoutedShares:
    record = _exactly(content, {ROUTED: ConfigRecord})[ROUTED]
    _fields(record, ROUTED, round=int, senders=str, ciphertexts=bytes)
    return RoutedShares(record["round"], _pairs(record, "senders", "ciphertexts", SHARE_CIPHERTEXT))


def masked_content(masked: MaskedInput) -> RecordDict:
    vectors = ArrayRecord({str(gid): Array(np.ascontiguousarray(v)) for gid, v in sorted(masked.vectors.items())})
    return RecordDict({MASKED: ConfigRecord({"site": masked.site, "round": masked.round}), VECTORS: vectors})


def masked_from_content(content: RecordDict) -> MaskedInput:
    records = _exactly(content, {MASKED: ConfigRecord, VECTORS: ArrayRecord})
    _fields(records[MASKED], MASKED, site=str, round=int)
    try:
        vectors = {int(gid): np.array(array.numpy()) for gid, array in records[VECTORS].items()}
    except Exception as err:  # a corrupt array or a group id that is not a number
        raise MalformedMessage(f"'{VECTORS}': cannot decode the masked vectors: {err}") from err
    return MaskedInput(records[MASKED]["site"], records[MASKED]["round"], vectors)


def request_content(request: UnmaskRequest) -> RecordDict:
    return RecordDict({REQUEST: ConfigRecord({"round": request.round, "survivors": _names(request.survivors), "dropped": _names(request.dropped)})})


def request_from_content(content: RecordDict) -> UnmaskRequest:
    record = _exactly(content, {REQUEST: ConfigRecord})[REQUEST]
    _fields(record, REQUEST, round=int, survivors=str, dropped=str)
    return UnmaskRequest(record["round"], tuple(_unnames(record, "survivors")), tuple(_unnames(record, "dropped")))


def unmask_content(response: UnmaskResponse) -> RecordDict:
    seeds, keys = sorted(response.seed_shares), sorted(response.key_shares)
    return RecordDict({UNMASK: ConfigRecord({
        "site": response.site, "round": response.round, "seed_owners": _names(seeds), "seed_shares": b"".join(response.seed_shares[s] for s in seeds),
        "key_owners": _names(keys), "key_shares": b"".join(response.key_shares[s] for s in keys),
    })})


def unmask_from_content(content: RecordDict) -> UnmaskResponse:
    record = _exactly(content, {UNMASK: ConfigRecord})[UNMASK]
    _fields(record, UNMASK, site=str, round=int, seed_owners=str, seed_shares=bytes, key_owners=str, key_shares=bytes)
    return UnmaskResponse(record["site"], record["round"], _pairs(record, "seed_owners", "seed_shares", shamir.SHARE_BYTES),
                          _pairs(record, "key_owners", "key_shares", shamir.SHARE_BYTES))


DECODERS = {"share": shares_from_content, "mask": masked_from_content, "unmask": unmask_from_content}


def _exactly(content: RecordDict, expected: Mapping[str, type]) -> dict:
    """The named records, refusing a message that has others or lacks one (nothing rides along unchecked)."""
    if set(content) != set(expected):
        raise MalformedMessage(f"expected records {sorted(expected)}, got {sorted(content)}")
    for name, kind in expected.items():
        if not isinstance(content[name], kind):
            raise MalformedMessage(f"'{name}' is a {type(content[name]).__name__}, expected a {kind.__name__}")
    return {name: content[name] for name in expected}


def _fields(record: ConfigRecord, name: str, **types: type) -> None:
    if set(record) != set(types):
        raise MalformedMessage(f"'{name}' has fields {sorted(record)}, expected {sorted(types)}")
    for field, kind in types.items():
        value = record[field]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MalformedMessage(f"'{name}': {field} is a {type(value).__name__}, expected {kind.__name__}")


def _names(names) -> str:
    """A list of site names as one JSON string (Flower cannot carry an empty list in a ConfigRecord)."""
    return json.dumps(list(names))


def _unnames(record: ConfigRecord, field: str) -> list[str]:
    try:
        names = json.loads(record[field])
    except ValueError as err:
        raise MalformedMessage(f"{field}: not a JSON list: {err}") from err
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise MalformedMessage(f"{field}: expected a list of site names")
    return names


def _unjoin(record: ConfigRecord, field: str, size: int, count: int) -> list[bytes]:
    """Fixed-size byte strings sent back to back (keys, shares, share ciphertexts)."""
    blob = record[field]
    if len(blob) != size * count:
        raise MalformedMessage(f"{field}: {len(blob)} bytes, expected {count} of {size}")
    return [blob[i * size : (i + 1) * size] for i in range(count)]


def _pairs(record: ConfigRecord, names: str, values: str, size: int) -> dict[str, bytes]:
    owners = _unnames(record, names)
    return dict(zip(owners, _unjoin(record, values, size, len(owners))))


# ---------------------------------------------------------------- the coordinator's side

class FlowerSites:
    """One round's sites at the far end of Flower messages: a `ProtocolSites` for `secure_sum`.

    `adverts`: the key adverts the train replies carried (step 0). A site that
    does not answer a step, answers with an error or with something unreadable
    has dropped out; `on_dropout(site, step, reason)` records it.
    """

    def __init__(self, link, nodes: Mapping[str, int], round_: int, timeout_s: float, adverts: list[KeyAdvert],
                 on_dropout: Callable[[str, str, str], None], traffic: dict[str, dict[str, int]]):
        self.link, self.nodes, self.round, self.timeout_s = link, dict(nodes), round_, timeout_s
        self.adverts, self.on_dropout, self.traffic = list(adverts), on_dropout, traffic

    def advertise(self, round_: int) -> list[KeyAdvert]:
        return self.adverts

    def share(self, roster: Roster) -> list[ShareBundle]:
        return self._ask("share", {site: roster_content(roster) for site in roster.sites})

    def mask(self, routed: Mapping[str, RoutedShares]) -> list[MaskedInput]:
        return self._ask("mask", {site: routed_content(shares) for site, shares in routed.items()})

    def unmask(self, request: UnmaskRequest) -> list[UnmaskResponse]:
        return self._ask("unmask", {site: request_content(request) for site in request.survivors})

    def _ask(self, step: str, contents: dict[str, RecordDict]) -> list:
        replies = self.link.exchange(MESSAGE_TYPES[step], contents, self.nodes, self.round, self.timeout_s)
        answers = []
        for site, reply in replies.items():
            problem, _ = reply_problem(reply)
            if not problem:
                self._count(site, contents[site], reply.content)
                try:
                    answer = DECODERS[step](reply.content)
                    if (answer.site, answer.round) != (site, self.round):
                        problem = f"answered as site {answer.site!r} for round {answer.round}"
                except MalformedMessage as err:
                    problem = str(err)
            if problem:
                log.warning("round %d: site %r dropped out of secure aggregation at the %r step: %s", self.round, site, step, problem)
                self.on_dropout(site, step, problem)
            else:
                answers.append(answer)
        return answers

    def _count(self, site: str, sent: RecordDict, received: RecordDict) -> None:
        bytes_ = self.traffic.setdefault(site, {"down": 0, "up": 0})
        bytes_["down"] += content_bytes(sent)
        bytes_["up"] += content_bytes(received)


def content_bytes(content: RecordDict) -> int:
    """Bytes of the arrays and of the config values a message carries (shares and keys travel in ConfigRecords).

    Counted here: Flower's ConfigRecord.count_bytes refuses an empty bytes value (no shares to send).
    """
    arrays = sum(record.count_bytes() for record in content.array_records.values())
    return arrays + sum(_value_bytes(v) for record in content.config_records.values() for v in record.values())


def _value_bytes(value) -> int:
    if isinstance(value, list):
        return sum(_value_bytes(v) for v in value)
    return len(value) if isinstance(value, (str, bytes)) else 1 if isinstance(value, bool) else 8


# ---------------------------------------------------------------- the site's side

def start(update: ModelUpdate, weighting: str, memory: RecordDict) -> RecordDict:
    """After local training: keep the update and fresh secrets here, reply with the key advert."""
    client = SecAggClient(update.site, update.deltas, site_weights(update.sample_counts, weighting))
    advert = client.advertise(update.round)
    keep(client, memory)
    return advert_content(advert, update)


def step(name: str, content: RecordDict, memory: RecordDict) -> RecordDict:
    """One protocol step at the site, from its kept half; refuses a step for another round than the one it trained."""
    client = restore(memory)
    if name == "share":
        roster = roster_from_content(content)
        _same_round(client, roster.round)
        reply = shares_content(client.share_keys(roster))
    elif name == "mask":
        routed = routed_from_content(content)
        _same_round(client, routed.round)
        client.receive_shares(routed)
        reply = masked_content(client.masked_input())
    elif name == "unmask":
        request = request_from_content(content)
        _same_round(client, request.round)
        reply = unmask_content(client.unmask(request))
    else:
        raise ValueError(f"unknown secure-aggregation step {name!r}; known: {STEPS}")
    keep(client, memory)
    return reply


def kept_roster(memory: RecordDict) -> Roster | None:
    """The roster this site accepted in the share step (what the egress check measures its messages by)."""
    return roster_from_content(RecordDict({ROSTER: memory[ROSTER]})) if ROSTER in memory else None


def keep(client: SecAggClient, memory: RecordDict) -> None:
    state = client.state_dict()
    held = state.get("held", {})
    memory[DELTAS] = state_to_record({k: torch.as_tensor(v) for k, v in state["deltas"].items()})
    memory[CLIENT] = ConfigRecord({
        "site": state["site"], "round": state["round"], "counts": json.dumps(state["counts"]), "clipped": state["clipped"], "seed": state["seed"],
        "cipher_private": state["cipher_keys"].private, "cipher_public": state["cipher_keys"].public,
        "mask_private": state["mask_keys"].private, "mask_public": state["mask_keys"].public,
        "revealed_seed": _names(state["revealed_seed"]), "revealed_key": _names(state["revealed_key"]),
        "held_sites": _names(held), "held_seed": b"".join(a for a, _ in held.values()), "held_key": b"".join(b for _, b in held.values()),
        "u2": json.dumps(state.get("u2")),
    })
    if "roster" in state:
        memory[ROSTER] = roster_content(state["roster"])[ROSTER]
    elif ROSTER in memory:
        del memory[ROSTER]


def restore(memory: RecordDict) -> SecAggClient:
    if CLIENT not in memory:
        raise RuntimeError("this site holds no secure-aggregation round: it was asked for a step before training (or after a restart)")
    record = memory[CLIENT]
    state = {
        "site": record["site"], "round": record["round"], "deltas": record_to_state(memory[DELTAS]),
        "counts": json.loads(record["counts"]), "clipped": record["clipped"], "seed": record["seed"],
        "cipher_keys": crypto.KeyPair(record["cipher_private"], record["cipher_public"]),
        "mask_keys": crypto.KeyPair(record["mask_private"], record["mask_public"]),
        "revealed_seed": _unnames(record, "revealed_seed"), "revealed_key": _unnames(record, "revealed_key"),
    }
    if ROSTER in memory:
        sites = _unnames(record, "held_sites")
        seeds, keys = (_unjoin(record, name, shamir.SHARE_BYTES, len(sites)) for name in ("held_seed", "held_key"))
        state |= {"roster": kept_roster(memory), "held": dict(zip(sites, zip(seeds, keys)))}
    if json.loads(record["u2"]) is not None:
        state["u2"] = json.loads(record["u2"])
    return SecAggClient.from_state_dict(state)


def _same_round(client: SecAggClient, round_: int) -> None:
    if round_ != client.round:
        raise ValueError(f"site {client.site!r}: a secure-aggregation step for round {round_}, but it trained round {client.round}")
