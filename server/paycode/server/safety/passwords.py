"""Wallet login passwords, stored as salted scrypt hashes (never the password itself).

Format: `scrypt$n$r$p$salt_b64$hash_b64`. The parameters travel with the hash so they can be
raised later without breaking stored rows; on reading they are bounded, so a tampered row cannot
make one login cost gigabytes or minutes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Final

SCHEME: Final = "scrypt"
N: Final = 2**14
R: Final = 8
P: Final = 1
SALT_BYTES: Final = 16
HASH_BYTES: Final = 32

N_MAX: Final = 2**20
R_MAX: Final = 16
P_MAX: Final = 4
SALT_BYTES_MAX: Final = 64
HASH_BYTES_RANGE: Final = range(16, 65)
MEMORY_BYTES_MAX: Final = 64 * 1024 * 1024
"""Largest scrypt memory (128 * n * r bytes) a stored hash may ask for: 4x today's 16 MiB."""
PASSWORD_CHARS_MAX: Final = 1024
"""Longer passwords are refused (hashing is linear in the input, and no person types 1 KiB)."""
_MAXMEM_SLACK_BYTES: Final = 1 << 20


class PasswordInvalid(ValueError):
    """A password that cannot be stored (empty or too long); the CLI reports it with a code."""


def hash_password(password: str) -> str:
    """A fresh salted scrypt hash of `password` in the self-describing stored format."""
    if not password or len(password) > PASSWORD_CHARS_MAX:
        raise PasswordInvalid(f"a password has 1 to {PASSWORD_CHARS_MAX} characters")
    try:
        secret = password.encode()
    except UnicodeEncodeError as error:
        raise PasswordInvalid("a password must be valid Unicode text") from error
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(secret, salt, n=N, r=R, p=P, length=HASH_BYTES)
    return "$".join((SCHEME, str(N), str(R), str(P), _b64(salt), _b64(digest)))


def verify_password(password: str, stored: str) -> bool:
    """True iff `password` matches `stored`; False (never an exception) for any malformed row."""
    parsed = _parse(stored)
    if parsed is None or not isinstance(password, str) or len(password) > PASSWORD_CHARS_MAX:
        return False
    n, r, p, salt, expected = parsed
    try:
        actual = _scrypt(password.encode(), salt, n=n, r=r, p=p, length=len(expected))
    except (ValueError, MemoryError):  # UnicodeEncodeError is a ValueError
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(secret: bytes, salt: bytes, *, n: int, r: int, p: int, length: int) -> bytes:
    maxmem = 128 * r * (n + p + 2) + _MAXMEM_SLACK_BYTES
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=maxmem)


def _parse(stored: object) -> tuple[int, int, int, bytes, bytes] | None:
    """The parameters of a stored hash, or None if it is not one we would ever have written."""
    parts = stored.split("$") if isinstance(stored, str) and len(stored) <= 512 else []
    if len(parts) != 6 or parts[0] != SCHEME:
        return None
    n, r, p = (_small_int(part) for part in parts[1:4])
    salt, digest = _unb64(parts[4]), _unb64(parts[5])
    if n is None or r is None or p is None or salt is None or digest is None:
        return None
    costs_ok = 1 < n <= N_MAX and n & (n - 1) == 0 and 1 <= r <= R_MAX and 1 <= p <= P_MAX
    sizes_ok = 1 <= len(salt) <= SALT_BYTES_MAX and len(digest) in HASH_BYTES_RANGE
    if not (costs_ok and sizes_ok and 128 * n * r <= MEMORY_BYTES_MAX):
        return None
    return n, r, p, salt, digest


def _small_int(text: str) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 8:
        return None
    return int(text)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
