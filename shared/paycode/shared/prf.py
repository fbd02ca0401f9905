"""The two keyed functions every code version is built from.

`mac` is HMAC-SHA256 (RFC 2104); `aes_block` is one AES-256 block encryption, used as a PRF to
derive masking pads. A pad needs at most 16 bytes, so a single AES call replaces a second HMAC
and keeps verification near the cost of the primitive.
"""

from __future__ import annotations

import hmac
import threading

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

AES_KEY_BYTES = 32
_CACHE_KEYS_MAX = 16

_local = threading.local()


def mac(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of `message` under `key` (32 bytes)."""
    return hmac.digest(key, message, "sha256")


def _encryptor(key: bytes) -> CipherContext:
    """A per-thread ECB context per key: creating one costs ~10x the block it encrypts."""
    cache: dict[bytes, CipherContext] | None = getattr(_local, "encryptors", None)
    if cache is None:
        cache = {}
        _local.encryptors = cache
    encryptor = cache.get(key)
    if encryptor is None:
        if len(key) != AES_KEY_BYTES:
            raise ValueError("AES key must be 32 bytes")
        if len(cache) >= _CACHE_KEYS_MAX:
            cache.clear()
        encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - one block as a PRF
        cache[key] = encryptor
    return encryptor


def aes_block(key: bytes, block: bytes) -> bytes:
    """AES-256 of one 16-byte block; ECB on a single block is the raw permutation."""
    assert len(block) == 16
    return _encryptor(key).update(block)
