"""What the cashier reads for each stable error code (docs/api.md): what happened, what to do.

Every code the server or the till can produce has a line here; an unknown code (a newer
server) falls back to the server's own message rather than to nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

CASHIER_MESSAGES: Mapping[str, str] = MappingProxyType(
    {
        "code_expired": "Code expired: ask the customer to refresh the code on their phone.",
        "code_replayed": "Code already used: ask the customer for a fresh code.",
        "code_invalid": "Not a valid payment code: ask the customer to show the code again.",
        "code_malformed": "Unreadable payment code: ask the customer to show the code again.",
        "code_ambiguous": "Code could not be matched: ask the customer for a fresh code.",
        "device_revoked": "This phone's wallet was revoked: the customer must re-enroll it.",
        "merchant_mismatch": "This code was made for another shop or till: ask the customer "
        "for a fresh code for this one.",
        "version_retired": "This code type is no longer accepted: the customer must update "
        "their wallet.",
        "insufficient_funds": "Insufficient funds: the customer's balance does not cover it.",
        "currency_mismatch": "Currency not accepted: this till and the customer's account "
        "use different currencies.",
        "limit_exceeded": "Over the customer's limit: ask them to pay another way.",
        "confirmation_required": "Waiting for the customer to confirm on their phone.",
        "declined_by_customer": "The customer declined the payment on their phone.",
        "cancelled_by_merchant": "Not confirmed in time: the payment was cancelled and nothing "
        "was paid. Ask for another way to pay.",
        "confirmation_expired": "Not confirmed in time: nothing was paid. Ask for another way "
        "to pay.",
        "device_locked": "This phone's codes are locked after bad codes: the customer opens "
        "the wallet online to unlock it.",
        "payment_not_pending": "This payment is no longer waiting for a confirmation.",
        "duplicate_order": "This order was already paid: check the payment before charging again.",
        "amount_invalid": "Amount not accepted: check the amount and currency.",
        "idempotency_conflict": "This sale was already sent with different details: start a "
        "new sale.",
        "idempotency_in_progress": "The server is still working on this sale: query it in a "
        "moment.",
        "unauthorized": "The till is not authorized: check its key (paycode-pos configure) "
        "and clock.",
        "forbidden": "The till may not do this.",
        "not_found": "No such payment for this merchant.",
        "refund_exceeds_payment": "Refund is more than what is left of the payment.",
        "payment_not_refundable": "This payment moved no money, so there is nothing to refund.",
        "rate_limited": "Too many failed attempts: wait a minute before trying again.",
        "database_busy": "The payment server is busy: try again.",
        "internal_error": "The payment server had an error: try again.",
        "server_unreachable": "Cannot reach the payment server: check the network.",
        "outcome_unknown": "No answer from the payment server: the sale may or may not be "
        "paid. Query it before charging again.",
        "no_payment_code": "No payment code seen: ask the customer to show their code.",
        "scan_timeout": "No payment code seen in time: ask the customer to show their code.",
    }
)


def cashier_message(code: str, server_message: str = "") -> str:
    """The cashier's line for `code`; the server's own words for a code this till predates."""
    known = CASHIER_MESSAGES.get(code)
    if known is not None:
        return known
    return f"Payment failed ({code}): {server_message}" if server_message else f"Failed: {code}"
