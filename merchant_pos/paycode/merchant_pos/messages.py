"""What the cashier reads for each stable error code (docs/api.md): what happened, what to do.

Every code the server or the till can produce has a line here; an unknown code (a newer
server) falls back to the server's own message rather than to nothing.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from types import MappingProxyType

from paycode.appkit.console import printable
from paycode.shared.codes import ErrorCode

REASON_CHARS_MAX = 160
"""The server's reason is a sentence (safety/limits.py); more is cut, not wrapped forever."""

CASHIER_MESSAGES: Mapping[str, str] = MappingProxyType(
    {
        ErrorCode.CODE_EXPIRED: (
            "Code expired: ask the customer to refresh the code on their phone (if it fails "
            "again, the phone's clock is wrong: one online call in the wallet fixes it)."
        ),
        ErrorCode.CODE_REPLAYED: "Code already used: ask the customer for a fresh code.",
        ErrorCode.CERTIFICATE_INVALID: (
            "Offline code not issued by this system: take another payment."
        ),
        ErrorCode.CERTIFICATE_EXPIRED: (
            "Offline allowance expired: ask the customer for a normal code or another payment."
        ),
        ErrorCode.CERTIFICATE_RETURNED: (
            "Offline allowance handed back or blocked: ask for a normal code or another payment."
        ),
        ErrorCode.OFFLINE_BLOCKED: (
            "The customer's offline payments are blocked: take another payment."
        ),
        ErrorCode.CODE_INVALID: (
            "Not a valid payment code: ask the customer to show the code again."
        ),
        ErrorCode.CODE_MALFORMED: (
            "Unreadable payment code: ask the customer to show the code again."
        ),
        ErrorCode.CODE_AMBIGUOUS: "Code could not be matched: ask the customer for a fresh code.",
        ErrorCode.DEVICE_REVOKED: (
            "This phone's wallet was revoked: the customer must re-enroll it."
        ),
        ErrorCode.MERCHANT_MISMATCH: (
            "This code was made for another shop or till: ask the customer for a fresh code for "
            "this one."
        ),
        ErrorCode.VERSION_RETIRED: (
            "This code type is no longer accepted: the customer must update their wallet."
        ),
        ErrorCode.INSUFFICIENT_FUNDS: (
            "Insufficient funds: the customer's balance does not cover it."
        ),
        ErrorCode.CURRENCY_MISMATCH: (
            "Currency not accepted: this till and the customer's account use different currencies."
        ),
        ErrorCode.LIMIT_EXCEEDED: "Over the customer's limit: ask them to pay another way.",
        ErrorCode.CONFIRMATION_REQUIRED: "Waiting for the customer to confirm with their PIN.",
        ErrorCode.DECLINED_BY_CUSTOMER: "The customer declined the payment on their phone.",
        ErrorCode.CANCELLED_BY_MERCHANT: (
            "Not confirmed in time: the payment was cancelled and nothing was paid. Ask for another"
            " way to pay."
        ),
        ErrorCode.CONFIRMATION_EXPIRED: (
            "Not confirmed in time: nothing was paid. Ask for another way to pay."
        ),
        ErrorCode.DEVICE_LOCKED: (
            "This phone's codes are locked after bad codes: the customer opens the wallet online to"
            " unlock it."
        ),
        ErrorCode.PAYMENT_NOT_PENDING: "This payment is no longer waiting for a confirmation.",
        ErrorCode.DUPLICATE_ORDER: (
            "This order id was used already; the customer's code was not used. Check that "
            "order before charging again with a new order id."
        ),
        ErrorCode.AMOUNT_INVALID: "Amount not accepted: check the amount and currency.",
        ErrorCode.ORDER_EXPIRED: "The order's QR expired before it was paid: start the sale again.",
        ErrorCode.ORDER_CANCELLED: "This order was cancelled: nothing was paid.",
        ErrorCode.PIN_REQUIRED: (
            "The customer must confirm this payment with their PIN in the wallet."
        ),
        ErrorCode.AMOUNT_MISMATCH: (
            "Paid, but not this sale's amount: check the payment (refund it if it is wrong) "
            "before charging again."
        ),
        ErrorCode.IDEMPOTENCY_CONFLICT: (
            "This sale was already sent with different details: start a new sale."
        ),
        ErrorCode.IDEMPOTENCY_IN_PROGRESS: (
            "The server is still working on this sale: query it in a moment."
        ),
        ErrorCode.UNAUTHORIZED: (
            "The till is not authorized: check its key (paycode-pos configure) and clock."
        ),
        ErrorCode.FORBIDDEN: "The till may not do this.",
        ErrorCode.NOT_FOUND: "No such payment for this merchant.",
        ErrorCode.REFUND_EXCEEDS_PAYMENT: "Refund is more than what is left of the payment.",
        ErrorCode.PAYMENT_NOT_REFUNDABLE: (
            "This payment moved no money, so there is nothing to refund."
        ),
        ErrorCode.RATE_LIMITED: "Too many failed attempts: wait a minute before trying again.",
        ErrorCode.DATABASE_BUSY: "The payment server is busy: try again.",
        ErrorCode.INTERNAL_ERROR: "The payment server had an error: try again.",
        ErrorCode.SERVER_UNREACHABLE: (
            "Cannot reach the payment server (the connection was refused before the charge was "
            "sent): nothing was charged. Check the network, then charge again."
        ),
        ErrorCode.OUTCOME_UNKNOWN: (
            "No answer from the payment server: the sale may or may not be paid. Query it before "
            "charging again."
        ),
        ErrorCode.CANCELLED: "Cancelled at the till before charging: nothing was charged.",
        ErrorCode.NO_PAYMENT_CODE: "No payment code seen: ask the customer to show their code.",
        ErrorCode.SCAN_TIMEOUT: (
            "No payment code seen in time: ask the customer to show their code."
        ),
        ErrorCode.OFFLINE_CODE_NEEDED: "Server offline: ask for an OFFLINE code.",
        ErrorCode.OFFLINE_NOT_READY: (
            "This till cannot take offline payments yet: go online once (paycode-pos sync)."
        ),
        ErrorCode.OFFLINE_LIMIT: "Above the offline limit: take another payment.",
        ErrorCode.SPLIT_SALE: (
            "One sale, one offline payment; above the limit take another payment."
        ),
        ErrorCode.OFFLINE_TILL_FULL: "The till must go online to sync first.",
        ErrorCode.OFFLINE_LOG_DAMAGED: (
            "The till's offline log is damaged: no offline sale until an operator looks."
        ),
        # Points redemptions (docs/api.md, "Points mandates"): the till's redeem call.
        ErrorCode.MANDATE_REVOKED: (
            "The customer revoked this shop's points mandate: nothing was taken. Take another "
            "payment."
        ),
        ErrorCode.MANDATE_EXPIRED: (
            "The customer's points mandate for this shop has ended: nothing was taken."
        ),
        ErrorCode.MANDATE_PAYMENT_CAP: (
            "More points than the customer allows in one payment: use fewer points."
        ),
        ErrorCode.MANDATE_DAY_CAP: (
            "Over the customer's points for today at this shop: use fewer points or money."
        ),
        ErrorCode.POINTS_INVALID: (
            "Points not accepted: they must make a whole amount at the agreed rate and not "
            "exceed the price."
        ),
        ErrorCode.INSUFFICIENT_POINTS: (
            "The customer does not have that many points: nothing was taken."
        ),
        # Hosted checkout (paycode-pos checkout).
        ErrorCode.RETURN_URL_INVALID: (
            "The return address is not accepted: an https address without a user or password."
        ),
    }
)


STOPPED_WAITING = (
    "Stopped at the till while the payment waited for the customer's PIN: it was cancelled, "
    "nothing was paid."
)


def query_command(order_id: str) -> str:
    """What the cashier runs to learn how a sale ended (the order id quoted for a shell)."""
    return f"paycode-pos query --order-id {shlex.quote(order_id)}"


def unknown_message(order_id: str, why: str = "") -> str:
    """OUTCOME UNKNOWN as the cashier reads it: why, if known, and how to find out."""
    said = why or cashier_message(ErrorCode.OUTCOME_UNKNOWN)
    return f"{said} Run: {query_command(order_id)}"


def waiting_message(reason: object) -> str:
    """The cashier's line while a payment waits for the customer's PIN, with why: the
    password-free limit the server says it passed (the charge answer's `reason`), escaped
    and bounded, as it is text from the network."""
    waiting = cashier_message(ErrorCode.CONFIRMATION_REQUIRED)
    if not isinstance(reason, str) or not reason.strip():
        return waiting
    why = printable(reason.strip())[:REASON_CHARS_MAX].rstrip(".")
    return f"{waiting.rstrip('.')}: {why}."


def cashier_message(code: str, server_message: str = "") -> str:
    """The cashier's line for `code`; the server's own words for a code this till predates."""
    known = CASHIER_MESSAGES.get(code)
    if known is not None:
        return known
    return f"Payment failed ({code}): {server_message}" if server_message else f"Failed: {code}"
