"""Points mandates (docs/spec.md §16): the consent a wallet signs and the rate arithmetic.

Loyalty points are an asset of their own: integer points, never Money. Their asset code "PTS"
is not an ISO 4217 currency, so `money.currency("PTS")` and `parse_amount(..., "PTS")` refuse
it, and no money path can read a points balance as an amount.

The consent is the exact bytes the wallet signs with its device key when the user binds a
merchant: `paycode-mandate/1\\n` then canonical JSON (sorted keys, no spaces, ASCII) of the
consent fields. Wallet and server build it here, so both sign and verify the same bytes.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Final

from paycode.shared.money import SUPPORTED_CURRENCIES

POINTS_ASSET: Final = "PTS"
"""The ledger's code for loyalty points (accounts.currency, ledger_entries.currency)."""
assert POINTS_ASSET not in {entry.alpha for entry in SUPPORTED_CURRENCIES}

CONSENT_SCHEME: Final = "paycode-mandate/1"
POINTS_MAX: Final = 10**12
"""Largest cap or deduction in points: far below 2**53 (JSON-safe) and BIGINT."""
RATE_TERM_MAX: Final = 10**6
"""Each side of a rate (points : minor units) is 1..10^6, so points x rate_minor stays exact."""
REFERENCE_CHARS_MAX: Final = 64
LIFETIME_S_MAX: Final = 2 * 366 * 86_400
"""A mandate lasts at most about two years: consent is renewed, not granted forever."""


@dataclass(frozen=True, slots=True)
class Consent:
    """What the user agrees to: this merchant may deduct up to the caps of this asset at this
    rate (`rate_points` points are worth `rate_minor` minor units of `currency`) until
    `expires_at_s`. `device_id` is the device that signs; `reference` is the user's customer
    number at the merchant (may be empty), shown to the merchant to match its own records."""

    merchant_id: str
    currency: str
    rate_points: int
    rate_minor: int
    cap_per_payment_points: int
    cap_per_day_points: int
    expires_at_s: int
    device_id: str
    reference: str = ""
    asset: str = POINTS_ASSET


def consent_message(consent: Consent) -> bytes:
    """The exact bytes signed: the scheme line, then the fields as canonical JSON."""
    fields = json.dumps(asdict(consent), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"{CONSENT_SCHEME}\n{fields}".encode("ascii")


def points_value_minor(points: int, rate_points: int, rate_minor: int) -> int | None:
    """What `points` are worth in minor units at the rate, or None when they do not make a
    whole number of minor units (nothing is ever rounded: the merchant sends points that do)."""
    assert points >= 0 and rate_points > 0 and rate_minor > 0
    value, remainder = divmod(points * rate_minor, rate_points)
    return None if remainder else value


def is_count(value: object, maximum: int) -> bool:
    """A JSON integer 1..maximum (bool is an int subclass, and True points is a bug)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= maximum
