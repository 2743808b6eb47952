"""What travels between coordinator and sites as Flower records, and how a reply is checked on arrival.

Coordinator -> site: the global state (ArrayRecord) and the round's instructions
(ConfigRecord: round, site, seed, local budget; the strategy's local objective,
its tensors as ArrayRecords). Site -> coordinator: the ModelUpdate, deltas as an
ArrayRecord keyed by parameter name (a site sends only what it trained, so key
sets differ between sites), per-key sample counts and site/round/n_samples as
ConfigRecords, training metrics as a MetricRecord. `update_from_content` refuses
anything malformed with a reason the round log keeps; shapes and values are then
checked by the update validator (federation/validation.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from federation.state import StateDict
from federation.update import ModelUpdate

STATE = "global_state"  # coordinator -> site: the global model's travelling tensors
INSTRUCTIONS = "instructions"  # coordinator -> site: round, site, plan, seed, local budget, splits
OBJECTIVE = "objective"  # coordinator -> site: the strategy's scalar terms; tensor terms as "objective.<name>"
DELTAS = "deltas"  # site -> coordinator
CONTROL_DELTAS = "control_deltas"  # SCAFFOLD
COUNTS = "sample_counts"
META = "meta"  # site, round, n_samples
METRICS = "metrics"
DECLINED = "declined"  # site -> coordinator: site, round, reason (instead of an update: its privacy budget is spent)


class MalformedMessage(ValueError):
    """A message that cannot be read as what it should be (a site's update for this round, a round's instructions)."""


def state_to_record(state: StateDict) -> ArrayRecord:
    record = ArrayRecord()
    for key, tensor in state.items():
        record[key] = Array(tensor.detach().cpu().contiguous().numpy())
    return record


def record_to_state(record: ArrayRecord) -> StateDict:
    # np.array copies: the decoded buffer is read-only and torch would share it
    return {key: torch.from_numpy(np.array(array.numpy())) for key, array in record.items()}


@dataclass
class Instructions:
    """What the coordinator asks of one site in one round."""

    round: int
    site: str
    plan: str
    """The consortium plan's fingerprint: a site with another config refuses."""
    seed: int = 0
    limits: dict[str, int] = field(default_factory=dict)
    """Lightning Trainer limits of the local training (max_epochs or max_steps)."""
    objective: dict = field(default_factory=dict)
    """Strategy.local_objective(): scalars, strings, or {parameter: tensor} tables."""
    splits: list[str] = field(default_factory=list)
    """For evaluation: the splits to evaluate the global model on."""


def instructions_content(global_state: StateDict, instructions: Instructions) -> RecordDict:
    header = {"round": instructions.round, "site": instructions.site, "plan": instructions.plan, "seed": instructions.seed,
              "splits": list(instructions.splits)} | {f"limits.{k}": int(v) for k, v in instructions.limits.items()}
    content = RecordDict({STATE: state_to_record(global_state), INSTRUCTIONS: ConfigRecord(header)})
    scalars = {}
    for name, value in instructions.objective.items():
        if isinstance(value, dict):
            content[f"{OBJECTIVE}.{name}"] = state_to_record(value)
        else:
            scalars[name] = value
    content[OBJECTIVE] = ConfigRecord(scalars)
    return content


def read_instructions(content: RecordDict) -> tuple[StateDict, Instructions]:
    header = _record(content, INSTRUCTIONS, ConfigRecord)
    objective = dict(content.config_records.get(OBJECTIVE, ConfigRecord()))
    prefix = f"{OBJECTIVE}."
    for name, record in content.array_records.items():
        if name.startswith(prefix):
            objective[name[len(prefix):]] = record_to_state(record)
    limits = {k.split(".", 1)[1]: int(v) for k, v in header.items() if k.startswith("limits.")}
    instructions = Instructions(int(header["round"]), str(header["site"]), str(header["plan"]), int(header["seed"]), limits,
                                objective, list(header.get("splits") or []))
    return record_to_state(_record(content, STATE, ArrayRecord)), instructions


def update_to_content(update: ModelUpdate) -> RecordDict:
    content = RecordDict(
        {
            DELTAS: state_to_record(update.deltas),
            COUNTS: ConfigRecord({k: int(v) for k, v in update.sample_counts.items()}),
            META: ConfigRecord({"site": update.site, "round": int(update.round), "n_samples": int(update.n_samples)}),
            METRICS: MetricRecord({k: float(v) for k, v in update.metrics.items()}),
        }
    )
    if getattr(update, "control_deltas", None):
        content[CONTROL_DELTAS] = state_to_record(update.control_deltas)
    return content


def update_from_content(content: RecordDict, expected_round: int) -> ModelUpdate:
    """The update a reply carries; MalformedMessage (with the reason) for anything else."""
    meta = _record(content, META, ConfigRecord)
    deltas = _record(content, DELTAS, ArrayRecord)
    counts = _record(content, COUNTS, ConfigRecord)
    metrics = content.metric_records.get(METRICS, MetricRecord())
    site, round_, n_samples = meta.get("site"), meta.get("round"), meta.get("n_samples")
    if not isinstance(site, str) or not site:
        raise MalformedMessage(f"'{META}' has no site name")
    if not isinstance(round_, int) or round_ != expected_round:
        raise MalformedMessage(f"site {site!r} answered for round {round_!r}, expected round {expected_round}")
    if not isinstance(n_samples, int) or n_samples <= 0:
        raise MalformedMessage(f"site {site!r}: n_samples is {n_samples!r}, expected a positive integer")
    if set(counts) != set(deltas):
        raise MalformedMessage(f"site {site!r}: sample counts and deltas name different parameters")
    if not all(isinstance(c, int) for c in counts.values()):
        raise MalformedMessage(f"site {site!r}: sample counts must be integers")
    try:
        tensors = record_to_state(deltas)
    except Exception as err:  # a corrupt array: numpy names what is wrong
        raise MalformedMessage(f"site {site!r}: cannot decode deltas: {err}") from err
    update = ModelUpdate(site, round_, tensors, dict(counts), n_samples, {k: float(v) for k, v in metrics.items()})
    if CONTROL_DELTAS in content.array_records:
        update.control_deltas = record_to_state(content.array_records[CONTROL_DELTAS])
    return update


def declined_content(site: str, round_: int, reason: str, metrics: dict[str, float]) -> RecordDict:
    """A site's answer to a train message it will not carry out (DP-SGD: the round would overrun its budget)."""
    return RecordDict({DECLINED: ConfigRecord({"site": site, "round": int(round_), "reason": reason}),
                       METRICS: MetricRecord({k: float(v) for k, v in metrics.items()})})


def declined_from_content(content: RecordDict, expected_round: int) -> tuple[str, dict[str, float]]:
    """Why the site declined, and the privacy it has spent (epsilon, delta)."""
    declined = _record(content, DECLINED, ConfigRecord)
    if declined.get("round") != expected_round or not isinstance(declined.get("reason"), str):
        raise MalformedMessage(f"site {declined.get('site')!r}: a malformed refusal for round {declined.get('round')!r}")
    metrics = content.metric_records.get(METRICS, MetricRecord())
    return f"declined: {declined['reason']}", {k: float(v) for k, v in metrics.items()}


def metrics_content(site: str, round_: int, metrics: dict[str, float]) -> RecordDict:
    return RecordDict({META: ConfigRecord({"site": site, "round": int(round_)}), METRICS: MetricRecord(metrics)})


def metrics_from_content(content: RecordDict, expected_round: int) -> dict[str, float]:
    meta = _record(content, META, ConfigRecord)
    if meta.get("round") != expected_round:
        raise MalformedMessage(f"site {meta.get('site')!r} evaluated round {meta.get('round')!r}, expected round {expected_round}")
    metrics = content.metric_records.get(METRICS)
    if metrics is None:
        raise MalformedMessage(f"site {meta.get('site')!r}: evaluation reply has no MetricRecord {METRICS!r}")
    return {k: float(v) for k, v in metrics.items()}


def record_bytes(content: RecordDict) -> int:
    """Bytes of the arrays a message carries (what dominates the traffic)."""
    return sum(record.count_bytes() for record in content.array_records.values())


def _record(content: RecordDict, name: str, kind: type):
    records = {ArrayRecord: content.array_records, ConfigRecord: content.config_records}[kind]
    if name not in records:
        raise MalformedMessage(f"reply has no {kind.__name__} {name!r} (it has {sorted(content)})")
    return records[name]
