"""Refunds: partial or whole, never beyond what was paid, each a balanced ledger transaction.

The bound is a conditional UPDATE on the payment (refunded + amount <= paid), so two concurrent
refunds cannot together exceed the payment; the CHECK constraint is the paired assertion.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from paycode.server.books import ledger
from paycode.server.charge.planning import payment_json
from paycode.server.database.models import Payment, Refund, new_id
from paycode.server.notifications import events
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.errors import AmountInvalid, ApiError
from paycode.shared.money import Money, format_amount, parse_amount


def owned_payment(session: Session, merchant_id: str, payment_id: str) -> Payment:
    """The payment if it belongs to the merchant; not_found otherwise (no leak)."""
    payment = session.get(Payment, payment_id[:64])
    if payment is None or payment.merchant_id != merchant_id:
        raise ApiError(ErrorCode.NOT_FOUND, "no such payment for this merchant")
    return payment


def _amount(body: dict[str, Any], payment: Payment) -> int:
    text = body.get("amount")
    if text is None:
        return payment.amount_minor - payment.refunded_minor
    if not isinstance(text, str):
        raise ApiError(ErrorCode.AMOUNT_INVALID, "'amount' must be a decimal string")
    try:
        return parse_amount(text, payment.currency).amount_minor
    except AmountInvalid as error:
        raise ApiError(ErrorCode.AMOUNT_INVALID, error.message) from error


def refund(
    session: Session,
    merchant_id: str,
    payment_id: str,
    body: dict[str, Any],
    now_s: float,
    *,
    refunded_seen_minor: int | None = None,
) -> tuple[int, dict[str, Any]]:
    """Refund `body["amount"]` (default: all that is left) of the merchant's payment.

    `refunded_seen_minor` is what the caller saw refunded when it decided (the dashboard's
    form): the refund happens only if that is still so, which makes a double-submitted form
    refund once (`payment_changed`) where an idempotency key is not available."""
    payment = owned_payment(session, merchant_id, payment_id)
    if payment.status != PaymentStatus.SUCCEEDED:
        raise ApiError(
            ErrorCode.PAYMENT_NOT_REFUNDABLE, f"a {payment.status} payment moved no money"
        )
    amount_minor = _amount(body, payment)
    if amount_minor <= 0:
        raise ApiError(ErrorCode.REFUND_EXCEEDS_PAYMENT, "this payment is already fully refunded")
    unchanged = (
        () if refunded_seen_minor is None else (Payment.refunded_minor == refunded_seen_minor,)
    )
    bounded = session.execute(
        update(Payment)
        .where(
            Payment.id == payment.id,
            Payment.refunded_minor + amount_minor <= Payment.amount_minor,
            *unchanged,
        )
        .values(refunded_minor=Payment.refunded_minor + amount_minor),
        execution_options={"synchronize_session": False},
    )
    if bounded.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(payment)
        if refunded_seen_minor is not None and payment.refunded_minor != refunded_seen_minor:
            raise ApiError(
                ErrorCode.PAYMENT_CHANGED, "the payment was refunded meanwhile: look again"
            )
        left = Money(payment.amount_minor - payment.refunded_minor, payment.currency)
        raise ApiError(
            ErrorCode.REFUND_EXCEEDS_PAYMENT, f"at most {format_amount(left)} can be refunded"
        )
    merchant_account = ledger.account(session, "merchant", payment.merchant_id, payment.currency)
    user_account = ledger.account(session, "user", payment.user_id or "", payment.currency)
    assert merchant_account is not None and user_account is not None
    ledger.transfer(
        session,
        kind="refund",
        debit=merchant_account,
        credit=user_account,
        amount_minor=amount_minor,
        now_s=now_s,
        payment_id=payment.id,
    )
    refund_row = Refund(
        id=new_id("ref"), payment_id=payment.id, amount_minor=amount_minor, created_at_s=now_s
    )
    session.add(refund_row)
    session.refresh(payment)
    reply = {
        "refund_id": refund_row.id,
        "amount": format_amount(Money(amount_minor, payment.currency)),
    }
    told = payment_json(payment)
    refund_json = reply | {"amount_minor": amount_minor, "currency": payment.currency}
    events.record(session, told, events.REFUNDED, now_s, extra={"refund": refund_json})
    return 201, reply | {"payment": told}
