"""Names and errors shared by every modality reader.

A site's data arrives as real files written by other people's tools, so every
reader reports problems as a `DataError` that names the file, the record and
the field. The run stops before training on the first one.
"""
from __future__ import annotations

import math
import os
import stat
from enum import StrEnum
from pathlib import Path


class Modality(StrEnum):
    """The modalities a site can hold; the value is the key used everywhere (config, batches, parameter names)."""

    PHENOTYPES = "phenotypes"
    VARIANTS = "variants"
    NOTES = "notes"
    IMAGING = "imaging"
    LABS = "labs"
    TABULAR = "tabular"


ALL_MODALITIES: tuple[str, ...] = tuple(m.value for m in Modality)


class DataError(ValueError):
    """Bad input in a site's files: says where (file, record, field) and what is wrong."""

    def __init__(self, path: str | Path, message: str, record: str | None = None, field: str | None = None):
        self.path = str(path)
        self.record = record
        self.field = field
        self.reason = message
        where = [self.path]
        if record is not None:
            where.append(f"record {record}")
        if field is not None:
            where.append(f"field {field}")
        super().__init__(f"{': '.join(where)}: {message}")

    def __reduce__(self):
        """Rebuilt from its own fields, so it crosses a process pool (a parallel benchmark row) intact."""
        return type(self), (self.path, self.reason, self.record, self.field)


def check_option(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """A config option that takes one of a few words: a typo fails at start-up, naming the choices."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def parse_number(text: str, missing: set[str], path: str | Path, record: str, field_name: str) -> float:
    """One raw cell -> float (NaN for a missing marker); anything else that is not a finite number is a DataError."""
    text = text.strip()
    if text in missing:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise DataError(path, not_a_number(text), record=record, field=field_name) from None
    if not math.isfinite(value):
        raise DataError(path, "the value is not a finite number (inf or nan)", record=record, field=field_name)
    return value


def not_a_number(text: str) -> str:
    """Why a cell is not a number, without quoting it: a patient's value is patient data (file, record and field locate it)."""
    if text.strip()[:1] in ("<", ">"):
        return "the value is a bound ('<' or '>' a detection limit), not a number: give the limit as a number or leave the cell empty"
    return "the value is not a number"


def regular_file(path: str | Path, record: str | None = None, field: str | None = None) -> Path:
    """`path`, checked to be a regular file (symlinks followed) before anything opens it.

    A named pipe would block `open()` for ever and a device could stream without end,
    so anything else is a DataError; so is a link that loops or points nowhere.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if os.path.lexists(path):
            raise DataError(path, f"cannot read: {err.strerror} (a broken or looping link?)", record=record, field=field) from None
        raise DataError(path, "file not found", record=record, field=field) from None
    if not stat.S_ISREG(mode):
        raise DataError(path, f"not a regular file (a {_file_kind(mode)}); only regular files are read", record=record, field=field)
    return path


def optional_file(path: str | Path) -> Path | None:
    """None when nothing is at `path` (an optional file such as labs.csv or split.csv); else `regular_file(path)`.

    A named pipe in its place is refused by name, not skipped as absent.
    """
    return regular_file(path) if os.path.lexists(path) else None


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISDIR, "folder"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device")):
        if test(mode):
            return kind
    return "device" if stat.S_ISBLK(mode) else "special file"
