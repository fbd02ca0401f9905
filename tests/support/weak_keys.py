"""Every small-order Ed25519 public key encoding, canonical or not (issue 19, item 6).

The list is the public one (libsodium's `ge25519_has_small_order` blocklist): the 8 torsion
points' y with the sign bit cleared (y = 0 and y = 1 and p - 1 and the two order-8 values), plus
the non-canonical y = p and y = p + 1; each with the sign bit clear and set. That covers every
small-order point and every non-canonical spelling of one (y + p < 2**255 only for y < 19)."""

from __future__ import annotations

SMALL_ORDER_Y = (
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
)
SIGN_BIT = 0x80
P = 2**255 - 19


def small_order_keys() -> list[bytes]:
    """Every small-order Ed25519 encoding, canonical or not: 7 y values x 2 sign bits."""
    keys = []
    for y_hex in SMALL_ORDER_Y:
        for sign in (0, SIGN_BIT):
            raw = bytearray(bytes.fromhex(y_hex))
            raw[31] |= sign
            keys.append(bytes(raw))
    return keys
