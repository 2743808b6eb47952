"""The egress check on every reply a deployed site sends, as a ClientApp mod.

The records a reply carries are read back strictly (a record or field nobody
declared is refused) into the message they encode, which then passes the same
allow-list as in-process (federation/privacy/egress.py): a model update's arrays
must be the global model's keys and shapes, a key advert may name only those
keys, a secure-aggregation message only the peers and vector lengths of the
roster this site accepted, metrics only those on the list. A refused reply
becomes an error reply: the content never leaves the site, the reason does.
"""
from __future__ import annotations

from collections.abc import Callable

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from federation.flower import secagg
from federation.flower.records import (
    CONTROL_DELTAS,
    COUNTS,
    DECLINED,
    DELTAS,
    META,
    METRICS,
    STATE,
    MalformedMessage,
    update_from_content,
)
from federation.privacy.egress import (
    EgressViolation,
    check_egress,
    serialise_fields,
    serialise_message,
    serialise_update,
)

STEP_OF = {message_type: step for step, message_type in secagg.MESSAGE_TYPES.items()}


def egress_mod(message: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    reply = call_next(message, context)
    if reply.has_content():  # an error reply carries Flower's error (the reason) only
        check_reply(message, reply.content, context.state)
    return reply


def check_reply(request: Message, content: RecordDict, memory: RecordDict) -> None:
    """Raise EgressViolation unless `content` is exactly an allowed answer to `request`."""
    kind = request.metadata.message_type
    try:
        if kind == MessageType.QUERY:
            check_egress(serialise_fields("site_identity", _config(content, {META: ConfigRecord}, site=str, plan=str)), {})
        elif kind == MessageType.EVALUATE:
            fields = _config(content, {META: ConfigRecord, METRICS: MetricRecord}, site=str, round=int)
            check_egress(serialise_fields("evaluation", fields | {"metrics": _metrics(content)}), {})
        elif kind == MessageType.TRAIN:
            _check_train(request, content)
        elif kind in STEP_OF:
            roster = secagg.kept_roster(memory)
            check_egress(serialise_message(secagg.DECODERS[STEP_OF[kind]](content)), {}, roster)
        else:
            raise EgressViolation(f"no egress rule for a reply to a {kind!r} message")
    except MalformedMessage as err:
        raise EgressViolation(f"reply to a {kind!r} message: {err}") from err


def _check_train(request: Message, content: RecordDict) -> None:
    shapes = {key: tuple(array.shape) for key, array in request.content.array_records[STATE].items()}
    if DECLINED in content:
        fields = _config(content, {DECLINED: ConfigRecord, METRICS: MetricRecord}, site=str, round=int, reason=str, record=DECLINED)
        check_egress(serialise_fields("declined", fields | {"metrics": _metrics(content)}), shapes)
    elif secagg.ADVERT in content:
        check_egress(serialise_message(secagg.advert_from_content(content)), shapes)
        fields = _config(content, {secagg.ADVERT: ConfigRecord, META: ConfigRecord, METRICS: MetricRecord}, site=str, round=int, n_samples=int)
        check_egress(serialise_fields("train_report", fields | {"metrics": _metrics(content)}), shapes)
    else:
        expected = {DELTAS: ArrayRecord, COUNTS: ConfigRecord, META: ConfigRecord, METRICS: MetricRecord}
        if CONTROL_DELTAS in content:
            expected[CONTROL_DELTAS] = ArrayRecord
        fields = _config(content, expected, site=str, round=int, n_samples=int)
        for name in (DELTAS, CONTROL_DELTAS):
            wrong = [k for k, a in content.array_records.get(name, ArrayRecord()).items() if a.dtype != "float32"]
            if wrong:
                raise EgressViolation(f"'{name}': arrays {wrong[:5]} are not float32")
        check_egress(serialise_update(update_from_content(content, fields["round"])), shapes)


def _config(content: RecordDict, records: dict[str, type], record: str = META, **fields: type) -> dict:
    """The declared fields of one ConfigRecord, in a reply that holds exactly `records`."""
    if set(content) != set(records) or any(not isinstance(content[name], kind) for name, kind in records.items()):
        raise EgressViolation(f"a reply with records {sorted(content)}; allowed here: {sorted(records)}")
    values = dict(content[record])
    if set(values) != set(fields):
        raise EgressViolation(f"'{record}' has fields {sorted(values)}, allowed: {sorted(fields)}")
    return values


def _metrics(content: RecordDict) -> dict[str, float]:
    return {name: float(value) for name, value in content[METRICS].items()}
