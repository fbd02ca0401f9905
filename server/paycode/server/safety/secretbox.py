"""Secrets at rest: AES-256-GCM under the server master key, key id stored with each row.

A sealed value is `key_id` (a column) plus nonce|ciphertext (a column). The row's own id is the
associated data, so a ciphertext copied onto another row does not decrypt.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:  # the configuration imports the parts; they only name its type
    from paycode.server.config import ServerConfig


_NONCE_BYTES = 12


class SecretBox:
    def __init__(self, keys: dict[str, bytes], current_id: str) -> None:
        assert current_id in keys
        self._aeads = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current_id = current_id

    def __repr__(self) -> str:
        return f"SecretBox(current_id={self.current_id!r}, key_ids={sorted(self._aeads)})"

    @property
    def key_ids(self) -> frozenset[str]:
        """Every master key id this box opens (the current one and any older ones)."""
        return frozenset(self._aeads)

    @classmethod
    def from_config(cls, config: ServerConfig) -> SecretBox:
        return cls(config.master_keys, config.master_key_id)

    def seal(self, plaintext: bytes, *, row_id: str) -> tuple[str, bytes]:
        """(key id, nonce|ciphertext) for storage."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aeads[self.current_id].encrypt(nonce, plaintext, row_id.encode())
        return self.current_id, nonce + sealed

    def open(self, key_id: str, sealed: bytes, *, row_id: str) -> bytes:
        aead = self._aeads.get(key_id)
        if aead is None:
            raise LookupError(f"master key {key_id!r} is not configured")
        try:
            return aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], row_id.encode())
        except InvalidTag as error:
            raise LookupError(f"secret of {row_id} does not decrypt under {key_id!r}") from error
