"""Public keys another party hands us, refused when they are weak (docs/spec.md §6.1).

An Ed25519 public key of small order lets one fixed signature verify every message: with the
identity as the key, R = identity and S = 0 pass OpenSSL's check for any message (the
cofactored check accepts it for every small-order key), so a device enrolled with such a key
could sign any code. A non-canonical spelling (y >= p) is refused too, so one key has one
encoding, and a point that is not on the curve is no key at all. The check decompresses the
point and multiplies it by the cofactor 8 with plain Edwards arithmetic: a small-order point
becomes the identity. That is slow next to OpenSSL but runs once per enrollment, never per code.

An X25519 public key of low order makes every shared secret all zeros: an envelope sealed to
it hides nothing. RFC 7748 §6.1: check the exchange's output is not all zeros.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from paycode.shared.errors import WeakKey

KEY_BYTES = 32
P = 2**255 - 19
D = (-121665 * pow(121666, -1, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
COFACTOR_DOUBLINGS = 3
"""8 = 2**3: three doublings take any point into the prime-order subgroup."""

Point = tuple[int, int, int, int]
"""Extended coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, xy = T/Z."""


def _recover_x(y: int, sign: int) -> int | None:
    """The x of the curve point with this y and sign bit (RFC 8032 §5.1.3), or None."""
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = (u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P)) % P
    if (v * x * x - u) % P != 0:
        x = (x * SQRT_M1) % P
    if (v * x * x - u) % P != 0:
        return None
    if x == 0 and sign == 1:
        return None  # -0 is a second spelling of x = 0
    return P - x if (x & 1) != sign else x


def _double(point: Point) -> Point:
    """2P on the twisted Edwards curve a = -1 (the "dbl-2008-hwcd" formulas)."""
    x1, y1, z1, _ = point
    a, b, c = x1 * x1 % P, y1 * y1 % P, 2 * z1 * z1 % P
    h = (a + b) % P
    e = (h - (x1 + y1) * (x1 + y1)) % P
    g = (a - b) % P
    f = (c + g) % P
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _is_identity(point: Point) -> bool:
    x, y, z, _ = point
    return x % P == 0 and (y - z) % P == 0


def check_ed25519_public(raw: bytes) -> bytes:
    """`raw` if it is a canonical Ed25519 point of large order; WeakKey otherwise."""
    if len(raw) != KEY_BYTES:
        raise WeakKey(f"an Ed25519 public key is {KEY_BYTES} bytes")
    encoded = int.from_bytes(raw, "little")
    y, sign = encoded & ((1 << 255) - 1), encoded >> 255
    if y >= P:
        raise WeakKey("the Ed25519 public key is not canonically encoded")
    x = _recover_x(y, sign)
    if x is None:
        raise WeakKey("the Ed25519 public key is not a point of the curve")
    point: Point = (x, y, 1, x * y % P)
    for _ in range(COFACTOR_DOUBLINGS):
        point = _double(point)
    if _is_identity(point):
        raise WeakKey("the Ed25519 public key has small order")
    return raw


def check_x25519_public(raw: bytes) -> bytes:
    """`raw` if it is a canonical X25519 u-coordinate of large order; WeakKey otherwise."""
    if len(raw) != KEY_BYTES:
        raise WeakKey(f"an X25519 public key is {KEY_BYTES} bytes")
    if int.from_bytes(raw, "little") >= P:
        raise WeakKey("the X25519 public key is not canonically encoded")
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError as error:  # OpenSSL refuses an all-zero shared secret
        raise WeakKey("the X25519 public key has low order") from error
    return raw


def ed25519_signed(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether `signature` by `public_key` verifies over `message`; a key or signature of the
    wrong length is no signature (False), never an exception."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
