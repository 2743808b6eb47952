"""A node-local cache of this site's prepared data, so that a message (a fresh process) does not read and prepare it again.

Flower starts a ClientApp process for every message; without the cache each one
parses the site's files, splits and normalises them again. An entry is the
loader's result for this site (its split datasets, the label space, the quality
report, as JSON), saved with `torch.save` and read back with `weights_only=True`, so
loading an entry can only rebuild tensors and plain containers, never run code.

Key: a hash of (1) the site's data files, (2) the config that shapes the prepared
data (the `data` config narrowed to this site, resolved, and the seed), (3) the
source of the `modalities` package (a change in a loader must not serve data the
old code prepared) and (4) this file's FORMAT. Files are fingerprinted by path,
size and modification time by default (`fingerprint: stat`): a stat per file per
message, where hashing contents would read a site's whole image folder again at
every message, which is the cost the cache removes. Any ordinary write changes
mtime; a copy that keeps size and mtime (`cp -p`, `rsync -t`) of different bytes
does not, so `fingerprint: content` (SHA-256 of every file) is there for sites that
replace data that way. The whole `data` config is hashed, not only the fields a
loader reads today: a setting that does not change the data (batch_size) costs a
rebuild, never a stale entry.

Entries lie in `deploy.site_cache.dir`, on the site's disk, and are never sent
anywhere; they hold patient-level features, like the data they come from (the
folder is created private to the node's user). An entry is written to a temporary
file and renamed, so a crash leaves none half-written; an entry that cannot be
read or does not match its key is removed and rebuilt. Sites whose prepared data
is not plain tensors and containers, or whose readers carry state (fitted
vocabularies, open files), are not cached: the reason is logged once and the data
is prepared as before.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from federation.outputs import write_atomic

log = logging.getLogger(__name__)
FORMAT = 1
HIT, MISS, OFF = "hit", "miss", "off"
PLAIN = (str, int, float, bool, type(None), torch.Tensor)
CODE_PACKAGE = "modalities"
"""The package whose source shapes prepared data: part of the key."""


class NotCacheable(ValueError):
    """A site's prepared data that the cache cannot store as tensors and plain containers."""


@dataclass
class SiteCache:
    folder: Path
    fingerprint: str = "stat"
    """How a data file is fingerprinted: `stat` (path, size, mtime) or `content` (SHA-256)."""
    keep: int = 4
    """Entries kept (the most recently used); older ones are removed when a new one is written."""

    @classmethod
    def from_config(cls, settings: DictConfig | None) -> SiteCache | None:
        """`deploy.site_cache` -> the cache, or None when it is off."""
        if settings is None or not settings.get("enabled", False):
            return None
        if settings.get("fingerprint", "stat") not in ("stat", "content"):
            raise ValueError(f"deploy.site_cache.fingerprint must be stat or content, got {settings.fingerprint!r}")
        return cls(Path(str(settings.dir)), str(settings.get("fingerprint", "stat")), int(settings.get("keep", 4)))

    def load_or_build(self, data: DictConfig, seed: int, build: Callable[[], object]) -> tuple[object, str]:
        """The site's prepared data (a Consortium) and where it came from: hit, miss (built and stored) or off (not cacheable)."""
        files = data_files(data)
        if not files:  # nothing found to fingerprint: let the loader say what is missing
            return build(), OFF
        key = entry_key(data, seed, files, self.fingerprint)
        path = self.folder / f"{key}.pt"
        cached = self._read(path, key)
        if cached is not None:
            _touch(path)  # most recently used
            return cached, HIT
        consortium = build()
        try:
            payload = to_payload(consortium, key)
        except NotCacheable as why:
            log.info("site data not cached: %s", why)
            return consortium, OFF
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, lambda p: torch.save(payload, p))
        self._prune()
        return consortium, MISS

    def _read(self, path: Path, key: str):
        if not path.exists():
            return None
        try:
            payload = torch.load(path, weights_only=True)
            if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("key") != key:
                raise ValueError("not an entry of this format and key")
            return from_payload(payload)
        except Exception as err:  # noqa: BLE001 - any damage (truncated, overwritten, foreign) means: rebuild
            log.warning("%s: damaged site-cache entry, rebuilding it (%s: %s)", path, type(err).__name__, err)
            path.unlink(missing_ok=True)
            return None

    def _prune(self) -> None:
        entries = sorted(((_mtime(p), p) for p in self.folder.glob("*.pt")), reverse=True)
        for _, old in entries[self.keep:]:
            old.unlink(missing_ok=True)


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:  # pruned meanwhile by another message's process: the data is already read
        pass


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def entry_key(data: DictConfig, seed: int, files: list[Path], fingerprint: str) -> str:
    parts = {
        "format": FORMAT,
        "data": OmegaConf.to_container(data, resolve=True),
        "seed": int(seed),
        "files": [file_fingerprint(f, fingerprint) for f in files],
        "code": [file_fingerprint(f, "stat") for f in package_files(CODE_PACKAGE)],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def file_fingerprint(path: Path, how: str) -> list:
    if how == "content":
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return [str(path), digest.hexdigest()]
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def data_files(data: DictConfig) -> list[Path]:
    """Every file under the paths the site's `data` config names (its entries' paths; else `data.path`, else `data.root`)."""
    root = Path(str(data.root)) if data.get("root") else None
    named = [str(e["path"]) for e in OmegaConf.to_container(data.get("sites") or [], resolve=True) if isinstance(e, dict) and e.get("path")]
    extra = data.get("path")
    named += [str(p) for p in (extra if isinstance(extra, (list, tuple)) or OmegaConf.is_list(extra) else [extra])] if extra else []
    paths = [p for p in (_resolve(n, root) for n in named) if p is not None]
    if not paths and root is not None and root.exists():
        paths = [root]
    return sorted({f for p in paths for f in _walk(p)})


def _resolve(name: str, root: Path | None) -> Path | None:
    for candidate in ([root / name] if root is not None else []) + [Path(name)]:
        if candidate.exists():
            return candidate.resolve()
    return None


def _walk(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return [Path(d) / f for d, _, names in os.walk(path) for f in names]


def package_files(package: str) -> list[Path]:
    spec = importlib.util.find_spec(package)
    folder = Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None
    return sorted(folder.rglob("*.py")) if folder else []


# ------------------------------------------------------------- a Consortium as tensors and plain containers

def to_payload(consortium, key: str) -> dict:
    """What `torch.load(weights_only=True)` can read back; NotCacheable (with the reason) otherwise."""
    from modalities.dataset import SiteDataset

    sites = []
    for site in consortium.sites:
        splits = {}
        for name, split in site.splits.items():
            if type(split) is not SiteDataset:
                raise NotCacheable(f"site {site.name!r}: split {name!r} is a {type(split).__name__}, not a SiteDataset")
            _check_plain(split.items, f"site {site.name!r}, split {name!r}")
            splits[name] = {"modalities": list(split.modalities), "items": split.items}
        sites.append({"name": site.name, "modalities": list(site.modalities), "splits": splits})
    return {"format": FORMAT, "key": key, "sites": sites, "labels": list(consortium.label_space.labels),
            "modalities": list(consortium.modalities), "readers": {m: _reader_path(m, r) for m, r in consortium.readers.items()},
            "quality": json.dumps(consortium.quality, default=str)}


def from_payload(payload: dict):
    from modalities.consortium import Consortium
    from modalities.dataset import SiteDataset
    from modalities.labels import LabelSpace
    from modalities.site_data import SiteData

    sites = [SiteData(s["name"], tuple(s["modalities"]),
                      {name: SiteDataset(split["items"], split["modalities"]) for name, split in s["splits"].items()})
             for s in payload["sites"]]
    readers = {m: _reader_class(path)() for m, path in payload["readers"].items()}
    return Consortium(sites, LabelSpace(payload["labels"]), list(payload["modalities"]), readers, json.loads(payload["quality"]))


def _check_plain(value, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise NotCacheable(f"{where}: a key of type {type(k).__name__}")
            _check_plain(v, where)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_plain(v, where)
    elif not isinstance(value, PLAIN):
        raise NotCacheable(f"{where}: an item holds a {type(value).__name__}")


def _reader_path(modality: str, reader) -> str:
    """A reader the cache can rebuild: no instance state, so a fresh one collates as the loader's did."""
    state = getattr(reader, "__dict__", None)
    if state is None or state:
        raise NotCacheable(f"the {modality!r} reader ({type(reader).__name__}) carries state: {sorted(state or ['__slots__'])}")
    return f"{type(reader).__module__}:{type(reader).__qualname__}"


def _reader_class(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)
