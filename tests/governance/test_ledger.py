"""The hash-chained ledger: every kind of tampering is found, at the first bad line, before anything is appended."""
import json
import runpy
from itertools import pairwise

import pytest
import torch
from support import ROOT

from federation.governance.hashing import GENESIS, canonical_json, model_hash
from federation.governance.ledger import FEEDBACK, ROUND, Ledger, LedgerError, entry_hash, head_path, read_ledger

verify_ledger = runpy.run_path(str(ROOT / "scripts" / "verify_ledger.py"))["main"]


def _ledger(tmp_path, n=4) -> Ledger:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    for i in range(n):
        ledger.append(ROUND, {"round": i + 1, "decision": "accepted", "metrics": {"a": 0.5 + i / 10, "b": float("nan")}})
    return ledger


def _lines(path):
    return path.read_text().splitlines(keepends=True)


def test_entries_chain_from_genesis_and_verify(tmp_path):
    ledger = _ledger(tmp_path)

    entries = read_ledger(ledger.path)

    assert [e["seq"] for e in entries] == [0, 1, 2, 3]
    assert entries[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in pairwise(entries))
    assert entries[0]["data"]["metrics"]["b"] is None  # NaN is not JSON: stored as null
    assert json.loads(head_path(ledger.path).read_text()) == {"entries": 4, "head": entries[-1]["hash"]}


def test_canonical_json_is_independent_of_key_order():
    assert canonical_json({"b": 1, "a": [1.0, {"d": 2, "c": 3}]}) == canonical_json({"a": [1.0, {"c": 3, "d": 2}], "b": 1})


def test_model_hash_covers_values_dtype_and_shape():
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(3)}

    assert model_hash(state) == model_hash(dict(reversed(state.items())))
    assert model_hash(state) != model_hash({**state, "w": state["w"].reshape(3, 2)})
    assert model_hash(state) != model_hash({**state, "w": state["w"].double()})
    assert model_hash(state) != model_hash({**state, "b": torch.tensor([0.0, 0.0, 1e-7])})


def _edit_value(path):
    lines = _lines(path)
    lines[1] = lines[1].replace('"decision":"accepted"', '"decision":"rejected"')
    path.write_text("".join(lines))


def _edit_and_rehash(path):
    """Edit line 2 and recompute its own hash: the next line's `prev` still points at the original."""
    lines = _lines(path)
    entry = json.loads(lines[1])
    entry["data"]["decision"] = "rejected"
    entry["hash"] = entry_hash(entry)
    lines[1] = canonical_json(entry) + "\n"
    path.write_text("".join(lines))


def _reformat(path):
    lines = _lines(path)
    lines[1] = json.dumps(json.loads(lines[1]), indent=1).replace("\n", " ") + "\n"
    path.write_text("".join(lines))


def _swap(path):
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_text("".join(lines))


def _delete_middle(path):
    lines = _lines(path)
    del lines[1]
    path.write_text("".join(lines))


def _delete_last(path):
    path.write_text("".join(_lines(path)[:-1]))


def _truncate(path):
    text = path.read_text()
    path.write_text(text[: len(text) - 20])


@pytest.mark.parametrize(
    ("tamper", "line", "words"),
    [
        (_edit_value, 2, "does not match its hash"),
        (_edit_and_rehash, 3, "prev does not match"),
        (_reformat, 2, "canonical JSON"),
        (_swap, 2, "seq is 2, expected 1"),
        (_delete_middle, 2, "seq is 2, expected 1"),
        (_delete_last, 4, "the last entries were deleted"),
        (_truncate, 4, "truncated"),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_tampering_is_detected_at_the_first_bad_line(tmp_path, tamper, line, words):
    ledger = _ledger(tmp_path)
    tamper(ledger.path)

    with pytest.raises(LedgerError, match=words) as caught:
        read_ledger(ledger.path)

    assert caught.value.line == line
    assert str(ledger.path) in str(caught.value)


def test_a_tampered_ledger_is_refused_before_a_run_appends(tmp_path):
    ledger = _ledger(tmp_path)
    _edit_value(ledger.path)
    before = ledger.path.read_bytes()

    with pytest.raises(LedgerError, match="line 2"):
        Ledger(ledger.path)
    with pytest.raises(LedgerError, match="line 2"):
        ledger.append(FEEDBACK, {"sites": {}})

    assert ledger.path.read_bytes() == before  # nothing appended


def test_missing_ledger_stops_a_run_that_continues_one(tmp_path):
    with pytest.raises(LedgerError, match="refusing to start a new chain"):
        Ledger(tmp_path / "ledger.jsonl", must_exist=True)

    assert not (tmp_path / "ledger.jsonl").exists()


def test_deleted_ledger_whose_head_remains_is_detected(tmp_path):
    ledger = _ledger(tmp_path)
    ledger.path.unlink()

    with pytest.raises(LedgerError, match="the ledger was deleted"):
        Ledger(ledger.path)


def test_a_ledger_without_its_head_is_refused(tmp_path):
    ledger = _ledger(tmp_path)
    head_path(ledger.path).unlink()

    with pytest.raises(LedgerError, match="head file missing"):
        read_ledger(ledger.path)


def test_verify_ledger_script_exit_status_and_message(tmp_path, capsys):
    ledger = _ledger(tmp_path)

    good = verify_ledger([str(ledger.path)])
    good_out = capsys.readouterr().out
    _swap(ledger.path)
    bad = verify_ledger([str(ledger.path)])

    assert good == 0 and "4 entries" in good_out
    assert bad == 1 and "line 2" in capsys.readouterr().err
