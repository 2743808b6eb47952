"""Named random streams, so each part of the consortium draws from its own stream.

Streams are children of the run's ``SeedSequence`` whose spawn key is derived from
names (site name, patient id, modality) rather than from a running counter: adding a
site, resizing one or switching a modality on leaves every other stream, and so every
other site's patients, exactly as they were.
"""
from __future__ import annotations

import hashlib

import numpy as np
from numpy.random import SeedSequence


def child(parent: SeedSequence, *keys: str | int) -> SeedSequence:
    """The sub-stream of ``parent`` named by ``keys``; the same keys always give the same stream."""
    words = tuple(_word(str(key)) for key in keys)
    return SeedSequence(parent.entropy, spawn_key=(*parent.spawn_key, *words))


def generator(parent: SeedSequence, *keys: str | int) -> np.random.Generator:
    return np.random.default_rng(child(parent, *keys))


def _word(key: str) -> int:
    # Python's hash() is salted per process; a digest is stable across runs and machines.
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
