"""The cryptographic primitives of secure aggregation, all from the `cryptography` package.

- X25519 key agreement (RFC 7748) gives every pair of sites a shared secret that
  the coordinator, which only relays public keys, cannot compute.
- HKDF-SHA256 (RFC 5869) turns a shared secret into independent keys per purpose,
  round and parameter group, so no key stream is ever reused.
- AES-256-GCM encrypts the secret shares a site sends to a peer through the coordinator.
- AES-256-CTR over zeros is the pseudorandom generator that expands a 32-byte seed
  into a mask as long as a parameter group (Bonawitz et al. 2017 use a PRG the same way).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
CONTEXT = b"rarefed-secagg-v1|"


@dataclass(frozen=True)
class KeyPair:
    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        key = X25519PrivateKey.generate()
        raw = serialization.Encoding.Raw
        private = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return cls(private, key.public_key().public_bytes(raw, serialization.PublicFormat.Raw))


def derive(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose (e.g. 'mask|round 3|group 1') from a secret."""
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=CONTEXT + purpose.encode()).derive(secret)


def agree(private: bytes, peer_public: bytes, purpose: str) -> bytes:
    """The key two sites share for `purpose`: X25519(mine, theirs) = X25519(theirs, mine), through HKDF."""
    shared = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    return derive(shared, purpose)


def encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """nonce || AES-GCM(plaintext); `associated` (sender, receiver, round) is authenticated, not sent."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def decrypt(key: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    return AESGCM(key).decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], associated)


def prg(seed: bytes, length: int, dtype: np.dtype) -> np.ndarray:
    """`length` uniform words of `dtype` (uint32/uint64) from a 32-byte seed: AES-256-CTR key stream."""
    n_bytes = length * np.dtype(dtype).itemsize
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(encryptor.update(bytes(n_bytes)) + encryptor.finalize(), dtype=dtype)
