"""The model registry: every accepted global model as a numbered version with its model card.

A version is a folder `vNNNN/` holding `model.safetensors` (the travelling tensors,
written atomically) and `card.json`: where the model came from (round, parent
version, the ledger entry that accepted it), what it was trained on (per-site
aggregates), how it performs (per site and per subgroup) and the SHA-256 of its
file. The card is written last, so a folder without a card is not a version.
`current.json` names the version in use; a version whose file no longer matches
its card is refused, never loaded.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from federation.governance.hashing import model_hash, sha256_file
from federation.outputs import write_json, write_model
from federation.state import StateDict

CARD = "card.json"
MODEL = "model.safetensors"
CURRENT = "current.json"
_VERSION_DIR = re.compile(r"^v(\d{4,})$")


class RegistryError(ValueError):
    """A registry version is missing or does not match its card."""


def version_dir_name(version: int) -> str:
    return f"v{version:04d}"


class Registry:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def versions(self) -> list[int]:
        if not self.root.is_dir():
            return []
        found = (_VERSION_DIR.match(p.name) for p in self.root.iterdir() if (p / CARD).is_file())
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, version: int) -> Path:
        return self.root / version_dir_name(version)

    def card(self, version: int) -> dict[str, Any]:
        path = self.path(version) / CARD
        if not path.is_file():
            raise RegistryError(f"{path}: no such version {version} (versions: {self.versions() or 'none'})")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise RegistryError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err

    def current(self) -> int | None:
        """The version in use: the one `current.json` names, else the latest, else None (empty registry)."""
        pointer = self.root / CURRENT
        if pointer.is_file():
            try:
                return int(json.loads(pointer.read_text(encoding="utf-8"))["version"])
            except (ValueError, KeyError, TypeError) as err:
                raise RegistryError(f"{pointer}: not a pointer to a version ({err})") from err
        versions = self.versions()
        return versions[-1] if versions else None

    def next_version(self) -> int:
        versions = self.versions()
        return versions[-1] + 1 if versions else 0

    def save(self, version: int, state: StateDict, card: dict[str, Any], metadata: dict[str, str]) -> dict[str, Any]:
        """Write the model, then its card (with the file's SHA-256 and the model hash); make it current."""
        folder = self.path(version)
        if (folder / CARD).exists():
            raise RegistryError(f"{folder}: version {version} exists already; versions are never overwritten")
        write_model(folder / MODEL, state, {**metadata, "version": str(version)})
        card = {**card, "version": version, "model_file": MODEL, "file_sha256": sha256_file(folder / MODEL), "model_hash": model_hash(state)}
        write_json(folder / CARD, card)
        self.set_current(version)
        return card

    def load(self, version: int) -> StateDict:
        """The version's tensors, after checking the file against its card; RegistryError if they differ."""
        card = self.card(version)
        path = self.path(version) / str(card.get("model_file", MODEL))
        if not path.is_file():
            raise RegistryError(f"{path}: version {version}'s model file is missing")
        actual = sha256_file(path)
        if actual != card.get("file_sha256"):
            raise RegistryError(
                f"{path}: SHA-256 {actual} does not match its card ({self.path(version) / CARD}, field file_sha256: "
                f"{card.get('file_sha256')}); the file was changed after it was registered, refusing to use it"
            )
        try:
            state = load_file(str(path))
        except SafetensorError as err:
            raise RegistryError(f"{path}: not a readable safetensors file ({err})") from err
        if model_hash(state) != card.get("model_hash"):
            raise RegistryError(f"{path}: the tensors do not match the card's model_hash; refusing to use it")
        return state

    def set_current(self, version: int) -> None:
        write_json(self.root / CURRENT, {"version": version})
