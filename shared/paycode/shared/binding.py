"""Merchant binding: the digest a merchant-bound code's MAC or signature covers (spec §10).

    binding = SHA-256("paycode-bind-1" | merchant_id | 0x00 | terminal_id or "")     32 bytes

A wallet that scanned a merchant's collection QR can make a code bound to that merchant (and
terminal, when the QR names one). The digest never travels in the code: the server recomputes
it from the charging terminal, so a code relayed to another shop fails there, unclaimed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

BINDING_BYTES = 32
"""Full SHA-256: the digest is never carried, so truncating it would save nothing."""
ID_CHARS_MAX = 99
"""An EMV data object holds at most 99 characters; no merchant or terminal id is longer."""

_DOMAIN = b"paycode-bind-1"
_SEPARATOR = b"\x00"


def _check_id(name: str, value: str) -> None:
    if not value or len(value) > ID_CHARS_MAX:
        raise ValueError(f"{name} must be 1..{ID_CHARS_MAX} characters")
    if "\x00" in value:
        # NUL separates the merchant id from the terminal id: allowing it would let two
        # different (merchant, terminal) pairs share one digest.
        raise ValueError(f"{name} must not contain NUL")


@dataclass(frozen=True, slots=True)
class MerchantBinding:
    """Where a bound code may pay: one merchant, or one terminal of it."""

    merchant_id: str
    terminal_id: str | None = None
    """None binds to the merchant only: any of its terminals accepts the code."""

    def __post_init__(self) -> None:
        _check_id("merchant_id", self.merchant_id)
        if self.terminal_id is not None:
            _check_id("terminal_id", self.terminal_id)

    @property
    def digest(self) -> bytes:
        terminal = (self.terminal_id or "").encode()
        message = _DOMAIN + self.merchant_id.encode() + _SEPARATOR + terminal
        return hashlib.sha256(message).digest()


def charging_point_bindings(merchant_id: str, terminal_id: str) -> tuple[bytes, bytes]:
    """The digests a code bound to this charging point can carry: terminal first (posters name
    their terminal by default), then merchant only. Distinct inputs, so at most one matches."""
    return (
        MerchantBinding(merchant_id, terminal_id).digest,
        MerchantBinding(merchant_id).digest,
    )
