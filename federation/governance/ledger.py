"""An append-only, hash-chained audit ledger (JSON Lines) of what the consortium decided.

Each line is one entry in canonical JSON: `seq` (0, 1, ...), `kind`, `time`,
`data`, `prev` (the previous entry's hash; zeros for the first) and `hash`, the
SHA-256 of the entry's canonical JSON without `hash`. Editing an entry breaks
its own hash; deleting or reordering entries breaks `seq` and the `prev` links;
a crash mid-write leaves a last line without its newline. A small head file
beside the ledger (`<ledger>.head`: entry count and last hash, written
atomically) catches the one change the chain alone cannot: deleting the last
entries. Anyone holding an earlier head hash (a site, the registry's model
cards) can check that the history up to it is unchanged.

The whole ledger is verified before every append, so a run never extends a
chain that was tampered with, and never silently starts a new one where it was
told to continue (`must_exist`).
"""
from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from federation.governance.hashing import GENESIS, canonical_json, jsonable, sha256_text
from federation.outputs import write_json

# Entry kinds.
RUN_START = "run_start"
ROUND = "round"
ROLLBACK = "rollback"
FEEDBACK = "feedback"
SITE_EXIT = "site_exit"
DEPLOYMENT = "deployment"  # what a site deployed after training, chosen on its validation split (federation/adaptation/)
KINDS = (RUN_START, ROUND, ROLLBACK, FEEDBACK, SITE_EXIT, DEPLOYMENT)
FIELDS = ("seq", "kind", "time", "data", "prev", "hash")


class LedgerError(ValueError):
    """The ledger cannot be trusted or extended: says which file and the first bad line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}: line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


def head_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".head")


def entry_hash(entry: dict[str, Any]) -> str:
    return sha256_text(canonical_json({k: v for k, v in entry.items() if k != "hash"}))


def read_ledger(path: str | Path) -> list[dict[str, Any]]:
    """Every entry, after checking the whole chain and the head; LedgerError names the first bad line."""
    path = Path(path)
    if not path.exists():
        raise LedgerError(path, "ledger not found")
    if not path.is_file():
        raise LedgerError(path, "not a regular file (a folder, named pipe or device)")
    data = path.read_bytes()
    if not data:
        raise LedgerError(path, "empty: a ledger holds at least its run_start entry (emptied, or the first write was cut off)", line=1)
    lines = data.split(b"\n")
    if lines[-1] != b"":
        raise LedgerError(path, "truncated: the last line has no newline (a write was cut off)", line=len(lines))
    entries: list[dict[str, Any]] = []
    for number, raw in enumerate(lines[:-1], start=1):
        try:
            line = raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as err:
            raise LedgerError(path, f"not UTF-8 (byte {err.start + 1} of the line): the entry was edited or damaged", line=number) from None
        entries.append(_check_line(path, number, line, entries[-1] if entries else None))
    _check_head(path, entries)
    return entries


def _check_line(path: Path, number: int, line: str, previous: dict | None) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as err:
        raise LedgerError(path, f"not valid JSON ({err.msg}); the entry was cut off or edited", line=number) from err
    if not isinstance(entry, dict) or set(entry) != set(FIELDS):
        raise LedgerError(path, f"not a ledger entry: expected the fields {', '.join(FIELDS)}", line=number)
    if entry["hash"] != entry_hash(entry):
        raise LedgerError(path, "edited: the entry's content does not match its hash", line=number)
    if line != canonical_json(entry):
        raise LedgerError(path, "edited: the line is not the entry's canonical JSON", line=number)
    expected_seq = 0 if previous is None else previous["seq"] + 1
    if entry["seq"] != expected_seq:
        raise LedgerError(path, f"seq is {entry['seq']}, expected {expected_seq}: an entry was deleted or moved", line=number)
    expected_prev = GENESIS if previous is None else previous["hash"]
    if entry["prev"] != expected_prev:
        raise LedgerError(path, "prev does not match the hash of the entry before it: the chain was edited or reordered", line=number)
    return entry


def _check_head(path: Path, entries: list[dict[str, Any]]) -> None:
    head_file = head_path(path)
    if not head_file.is_file():
        if entries:
            raise LedgerError(head_file, f"head file missing beside a ledger of {len(entries)} entries; cannot tell whether entries were deleted")
        return
    try:
        head = json.loads(head_file.read_text(encoding="utf-8"))
        count, last = int(head["entries"]), str(head["head"])
    except (ValueError, KeyError, TypeError) as err:
        raise LedgerError(head_file, f"not a ledger head ({err})") from err
    if count > len(entries):
        raise LedgerError(path, f"the head records {count} entries but only {len(entries)} remain: the last entries were deleted", line=len(entries) + 1)
    if count < len(entries):
        raise LedgerError(path, f"entries past the recorded head ({count} entries): appended outside the ledger writer, or a writer stopped before moving the head", line=count + 1)
    if entries and last != entries[-1]["hash"]:
        raise LedgerError(path, "the last entry's hash does not match the recorded head: it was replaced", line=len(entries))


class Ledger:
    """The run's ledger: verified when opened and before each append.

    `must_exist`: the run continues a consortium's existing ledger; a missing file is
    an error rather than the start of a new chain.
    """

    def __init__(self, path: str | Path, must_exist: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            if must_exist:
                raise LedgerError(self.path, "ledger not found, but this run is set to continue an existing one (ledger.must_exist); refusing to start a new chain")
            if head_path(self.path).exists():
                raise LedgerError(self.path, f"ledger not found although its head {head_path(self.path).name} exists: the ledger was deleted")
        self.entries()  # verify now, before the run trains anything

    def entries(self) -> list[dict[str, Any]]:
        return read_ledger(self.path) if self.path.exists() else []

    def append(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """Verify the chain, append one entry and move the head; returns the entry (with its hash)."""
        if kind not in KINDS:
            raise ValueError(f"unknown ledger entry kind {kind!r}; known: {KINDS}")
        with _exclusive(self.path):
            return self._append(kind, data)

    def _append(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        entries = self.entries()
        last = entries[-1] if entries else None
        entry = {
            "seq": 0 if last is None else last["seq"] + 1,
            "kind": kind,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "data": jsonable(data),
            "prev": GENESIS if last is None else last["hash"],
        }
        entry["hash"] = entry_hash(entry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(canonical_json(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        write_json(head_path(self.path), {"entries": entry["seq"] + 1, "head": entry["hash"]})
        return entry


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One writer at a time (a run and a rollback script), between verifying and appending."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
