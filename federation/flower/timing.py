"""Where a deployed message's time goes: timestamps the site's ClientApp takes, and the coordinator's send and reply times.

Flower starts a fresh ClientApp process for every message, so much of a message's
time passes before any of our code runs (polls, the process start, imports). To see
it, the site writes one JSON line per message to its own disk (the SuperNode's node
config `timing`, set from `deploy.timing_log`): when its process started, when the
app's imports began and ended, and when each phase of the handler ended; the
coordinator writes one line per message to `messages.jsonl` in its run folder (sent,
replied). The two meet by message id (benchmarks/flower_rounds.py joins them on
loopback, where both clocks are the machine's). None of it travels in a reply.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

IMPORTS: dict[str, float] = {}
"""client_app.py's `imports_start` and `imports_done` (epoch seconds), taken around its imports."""
PHASES = ("config", "model", "data", "work")
"""What a train or evaluate handler marks, in order: config composed, model built, data ready, trained or evaluated."""


def process_start_time() -> float | None:
    """When this process started (epoch seconds, from /proc); None where /proc is not there (not Linux)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


class MessageTimes:
    """One message's timestamps at the site; the handler marks its phases through `mark` and `note`."""

    def __init__(self, message_id: str, kind: str):
        started, imports = process_start_time(), dict(IMPORTS)
        if started is not None and imports.get("imports_done", started) < started:  # forked from a warm process (warm_exec.py)
            imports = {"imports_start": started, "imports_done": started, "forked": True}
        self.record: dict = {"message_id": message_id, "kind": kind, "process_start": started, **imports, "handler_start": time.time()}

    def mark(self, phase: str) -> None:
        self.record[f"{phase}_done"] = time.time()

    def note(self, **fields) -> None:
        self.record.update(fields)


current: MessageTimes | None = None
"""The message this process is handling (Flower runs one per process; tests run several, one after another)."""


def mark(phase: str) -> None:
    if current is not None:
        current.mark(phase)


def note(**fields) -> None:
    if current is not None:
        current.note(**fields)


def timing_mod(message, context, call_next: Callable):
    """The outermost ClientApp mod: time the whole handling (egress check included), then append the line."""
    global current
    current = MessageTimes(message.metadata.message_id, message.metadata.message_type)
    try:
        return call_next(message, context)
    finally:
        current.mark("reply")
        path = context.node_config.get("timing")
        if path:
            append_line(Path(str(path)), current.record)


def append_line(path: Path, record: dict) -> None:
    """One JSON line, appended in a single write (lines from processes that overlap do not interleave)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record, default=str) + "\n")


def read_lines(path: Path) -> list[dict]:
    """Every record of a timing or message log; an unfinished last line (a process killed mid-write) is skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
