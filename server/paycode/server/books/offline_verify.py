"""Is a v4 code one the server pays? (docs/offline.md §6.1 steps 4 and 5)

The same checks a till made alone (paycode.shared.offline), against the server's own records:
the certificate must be one the server issued, byte for byte, and the amount within what the
certificate, the code and the merchant's floor allow. Used by settlement (a till's record, its
time `at_s`) and by the online charge of a v4 code (the server's clock). A refusal is a value
with a reason for the log, never an exception: the caller decides what it costs whom.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from paycode.server.database.models import Merchant
from paycode.server.database.offline_models import OfflineAllowance, OfflineCertificate
from paycode.server.safety.offline_keys import OfflineKeys
from paycode.server.safety.offline_settings import OfflineSettings
from paycode.shared.binding import charging_point_bindings
from paycode.shared.offline import OfflineCode, check_certificate, check_payment
from paycode.shared.timestep import STEP_SECONDS

AT_SKEW_S_MAX = 600
"""§6.1 step 5: a till's acceptance time and the code's signed step at most this far apart."""


@dataclass(frozen=True, slots=True)
class Verified:
    code: OfflineCode
    certificate: OfflineCertificate
    allowance: OfflineAllowance

    @property
    def counter(self) -> int:
        return self.code.payment.counter


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: str
    """For the server's log; the till only learns `refused_invalid`."""
    over_limit_minor: int | None = None
    """Set when the code is genuine but the amount is above this, the least of the caps and
    the floor: an online charge says so (`limit_exceeded`) instead of "not genuine"."""


def floor_minor(merchant: Merchant, settings: OfflineSettings) -> int:
    """F: the merchant's own offline floor, else the server's default (0: no offline sales)."""
    if merchant.offline_floor_minor is not None:
        return merchant.offline_floor_minor
    return settings.floor_minor


def _issued(
    session: Session, code: OfflineCode, *, currency: str, merchant: Merchant, keys: OfflineKeys
) -> OfflineCertificate | Invalid:
    """Step 4 and the currencies: a certificate the server signed and stored, byte for byte."""
    server_keys = {kid: key.public_key for kid, key in keys.by_id.items()}
    # The certificate's window is judged at the code's signed time: a till that accepted it
    # then was right, however late it syncs (lateness is the escrow's business, step 6).
    refused = check_certificate(
        code.certificate,
        server_keys=server_keys,
        now_s=code.payment.step * STEP_SECONDS,
        currency=currency,
    )
    if refused is not None:
        return Invalid(f"certificate: {refused.detail}")
    row = session.get(OfflineCertificate, code.certificate.fields.cert_id.hex())
    if row is None or bytes(row.body) != code.certificate.raw:
        return Invalid("no certificate with these bytes was issued")
    if currency != merchant.currency:
        return Invalid(f"the merchant takes {merchant.currency}")
    return row


def verify_code(
    session: Session,
    code: OfflineCode,
    *,
    amount_minor: int,
    currency: str,
    merchant: Merchant,
    terminal_id: str,
    keys: OfflineKeys,
    settings: OfflineSettings,
    at_s: float,
    server_now_s: float | None = None,
) -> Verified | Invalid:
    """Steps 4 and 5 for a code accepted at `at_s`. `server_now_s` (an online charge) also
    holds the code's step to the till's window around the server's clock."""
    row = _issued(session, code, currency=currency, merchant=merchant, keys=keys)
    if isinstance(row, Invalid):
        return row
    signed_s = code.payment.step * STEP_SECONDS
    bindings = charging_point_bindings(merchant.id, terminal_id)
    refused = check_payment(
        code, bindings=bindings, now_s=signed_s if server_now_s is None else server_now_s
    )
    if refused is not None:
        return Invalid(f"payment: {refused.detail}")
    most_minor = min(
        code.certificate.fields.per_payment_cap_minor,
        code.payment.amount_limit_minor,
        floor_minor(merchant, settings),
    )
    if not 0 < amount_minor <= most_minor:
        return Invalid(
            f"amount above {most_minor}, the least of the caps and the floor", most_minor
        )
    if abs(at_s - signed_s) > AT_SKEW_S_MAX:
        return Invalid("accepted too far from the code's signed time")
    allowance = session.get(OfflineAllowance, row.allowance_id)
    assert allowance is not None, "a certificate belongs to an allowance (foreign key)"
    return Verified(code, row, allowance)
