"""Finding each patient's file for a modality in a site folder (`<folder>/<patient_id><suffix>`)."""
from __future__ import annotations

import logging
from collections.abc import Collection, MutableMapping
from pathlib import Path

from modalities.base import DataError, regular_file

log = logging.getLogger(__name__)


def patient_files(
    folder: Path, suffixes: tuple[str, ...], known_ids: Collection[str], kind: str, stats: MutableMapping[str, int]
) -> dict[str, Path]:
    """Patient id -> file, for files named after a patient with a phenopacket.

    Files of unknown patients are ignored and counted (`files_without_phenopacket`);
    two files for one patient are an error, since neither can be chosen silently, and
    so is a patient's file that is not a regular file (a named pipe would block the read).
    """
    files: dict[str, Path] = {}
    if not folder.is_dir():
        return files
    for path in sorted(folder.iterdir()):
        patient_id = strip_suffix(path.name, suffixes)
        if patient_id is None:
            continue
        if patient_id not in known_ids:
            stats["files_without_phenopacket"] = stats.get("files_without_phenopacket", 0) + 1
            continue
        if patient_id in files:
            raise DataError(path, f"two {kind} files for one patient (also {files[patient_id].name})", record=patient_id)
        files[patient_id] = regular_file(path, record=patient_id)
    ignored = stats.get("files_without_phenopacket", 0)
    if ignored:
        log.warning("%s: ignored %d %s files of patients without a phenopacket", folder, ignored, kind)
    return files


def strip_suffix(name: str, suffixes: tuple[str, ...]) -> str | None:
    """The name without the first matching suffix (case-insensitive), or None if none matches."""
    lower = name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None
