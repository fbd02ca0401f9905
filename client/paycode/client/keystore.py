"""The wallet's keystore: one JSON document, encrypted at rest with AES-256-GCM.

The key comes from scrypt over a passphrase. A phone would take that passphrase from its OS
keystore (Android Keystore, iOS Keychain); this reference wallet takes it from the environment
variable PAYCODE_WALLET_PASSPHRASE or, failing that, from a random secret file kept beside the
keystore with 0600 permissions (the same role the OS keystore plays, and no stronger).

Writes are atomic (temp file, fsync, rename), so a crash leaves the old or the new state, never
a torn file: a counter that was handed out is never handed out again.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from paycode.appkit.private_files import write_private
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import WalletError

FORMAT = "paycode-wallet/1"
KEYSTORE_NAME = "wallet.json"
SECRET_NAME = "device-secret"  # noqa: S105 - a file name
PASSPHRASE_ENV = "PAYCODE_WALLET_PASSPHRASE"  # noqa: S105 - a variable name
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_NONCE_BYTES = 12
_AAD = FORMAT.encode()
KEYSTORE_BYTES_MAX = 1 << 20
SCRYPT_MEMORY_BYTES_MAX = 1 << 28
"""scrypt needs 128 * n * r bytes: 256 MiB is 8x what this wallet writes."""
SCRYPT_WORK_MAX = 16 * SCRYPT_N * SCRYPT_R * SCRYPT_P
"""scrypt's time grows with n * r * p: 16x what this wallet writes (about 1.5 s here)."""


@dataclass(frozen=True, slots=True)
class _Kdf:
    salt: bytes
    n: int
    r: int
    p: int

    def derive(self, passphrase: bytes) -> bytes:
        return Scrypt(salt=self.salt, length=32, n=self.n, r=self.r, p=self.p).derive(passphrase)

    def as_json(self) -> dict[str, object]:
        salt = base64.b64encode(self.salt).decode()
        return {"name": "scrypt", "n": self.n, "r": self.r, "p": self.p, "salt": salt}


def passphrase_for(home: Path) -> bytes:
    """The environment's passphrase, else the home's secret file (created on first use)."""
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env:
        return from_env.encode()
    secret_path = home / SECRET_NAME
    if not secret_path.exists():
        write_private(secret_path, secrets.token_urlsafe(32).encode())
    return secret_path.read_bytes().strip()


class Keystore:
    """An open keystore: the derived key stays in memory so each save costs one AES-GCM."""

    def __init__(self, path: Path, key: bytes, kdf: _Kdf) -> None:
        self.path = path
        self._key = key
        self._kdf = kdf

    def __repr__(self) -> str:
        return f"Keystore({str(self.path)!r})"

    @classmethod
    def create(cls, path: Path, passphrase: bytes) -> Keystore:
        kdf = _Kdf(os.urandom(_SALT_BYTES), SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return cls(path, kdf.derive(passphrase), kdf)

    @classmethod
    def open(cls, path: Path, passphrase: bytes) -> tuple[Keystore, dict[str, Any]]:
        """Open and decrypt; raises WalletError for a missing, corrupt or wrongly keyed file."""
        envelope = _read_envelope(path)
        kdf = _kdf_from(envelope)
        store = cls(path, kdf.derive(passphrase), kdf)
        return store, store._decrypt(envelope)

    def reload(self) -> dict[str, Any]:
        """The document as saved now (another process may have saved since it was opened)."""
        return self._decrypt(_read_envelope(self.path))

    def save(self, document: dict[str, Any]) -> None:
        nonce = os.urandom(_NONCE_BYTES)
        plain = json.dumps(document, sort_keys=True).encode()
        envelope = {
            "format": FORMAT,
            "kdf": self._kdf.as_json(),
            "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(AESGCM(self._key).encrypt(nonce, plain, _AAD)).decode(),
        }
        write_private(self.path, json.dumps(envelope, indent=1).encode())

    def _decrypt(self, envelope: dict[str, Any]) -> dict[str, Any]:
        try:
            nonce = base64.b64decode(envelope["nonce"], validate=True)
            ciphertext = base64.b64decode(envelope["ciphertext"], validate=True)
            plain = AESGCM(self._key).decrypt(nonce, ciphertext, _AAD)
        except InvalidTag as error:
            message = f"cannot decrypt {self.path}: wrong passphrase, or the file was altered"
            raise WalletError(message, code=ErrorCode.WALLET_LOCKED) from error
        except (KeyError, TypeError, ValueError) as error:
            raise _corrupt(self.path) from error
        document = json.loads(plain)
        if not isinstance(document, dict):
            raise _corrupt(self.path)
        return document


def _corrupt(path: Path) -> WalletError:
    return WalletError(f"{path} is not a paycode wallet keystore", code=ErrorCode.WALLET_CORRUPT)


def _read_envelope(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise WalletError(
            f"no wallet at {path}: run 'paycode-wallet enroll' first", code=ErrorCode.NOT_ENROLLED
        )
    if path.stat().st_size > KEYSTORE_BYTES_MAX:
        raise _corrupt(path)
    try:
        envelope = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _corrupt(path) from error
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise _corrupt(path)
    return envelope


def _kdf_from(envelope: dict[str, Any]) -> _Kdf:
    raw = envelope.get("kdf")
    unknown = WalletError("keystore names an unknown key derivation", code=ErrorCode.WALLET_CORRUPT)
    if not isinstance(raw, dict) or raw.get("name") != "scrypt":
        raise unknown
    try:
        kdf = _Kdf(base64.b64decode(raw["salt"], validate=True), raw["n"], raw["r"], raw["p"])
    except (KeyError, TypeError, ValueError) as error:
        raise unknown from error
    if not all(isinstance(value, int) for value in (kdf.n, kdf.r, kdf.p)):
        raise unknown
    # Bounds keep a tampered file from asking for gigabytes of scrypt memory.
    in_range = 2**10 <= kdf.n <= 2**20 and 1 <= kdf.r <= 32 and 1 <= kdf.p <= 4
    power_of_two = kdf.n & (kdf.n - 1) == 0
    if not in_range or not power_of_two or not _scrypt_cost_bounded(kdf):
        raise WalletError(
            "keystore asks for out-of-range scrypt parameters", code=ErrorCode.WALLET_CORRUPT
        )
    return kdf


def _scrypt_cost_bounded(kdf: _Kdf) -> bool:
    """Each parameter in range is not enough: together they multiply (n=2**20, r=32, p=4 is
    4 GiB and about a minute)."""
    memory_bytes = 128 * kdf.n * kdf.r
    return memory_bytes <= SCRYPT_MEMORY_BYTES_MAX and kdf.n * kdf.r * kdf.p <= SCRYPT_WORK_MAX
