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
from paycode.server.points import redemption
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.errors import AmountInvalid, ApiError
from paycode.shared.money import Money, format_amount, parse_amount


def owned_payment(session: Session, merchant_id: str, payment_id: str) -> Payment:
    """The payment if it belongs to the merchant; not_found otherwise (no leak)."""
    payment = session.get(Payment, payment_id[:64])
    if payment is None or payment.merchant_id != merchant_id:
        raise ApiError(ErrorCode.NOT_FOUND, "no such payment for this merchant")
    return payment


def _money_left_minor(payment: Payment) -> int:
    """What the money leg has left to refund: a points redemption's points value was paid in
    points (docs/spec.md §16), and comes back as points, never as money."""
    return payment.amount_minor - (payment.points_value_minor or 0) - payment.refunded_minor


def _amount(body: dict[str, Any], payment: Payment) -> int:
    text = body.get("amount")
    if text is None:
        return _money_left_minor(payment)
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
    """Refund `body["amount"]` (default: all that is left) of the merchant's payment; of a
    points redemption, `amount` and/or `points` of each leg (default: the rest of both).

    `refunded_seen_minor` is what the caller saw refunded when it decided (the dashboard's
    form): the refund happens only if that is still so, which makes a double-submitted form
    refund once (`payment_changed`) where an idempotency key is not available."""
    payment = owned_payment(session, merchant_id, payment_id)
    if payment.status != PaymentStatus.SUCCEEDED:
        raise ApiError(
            ErrorCode.PAYMENT_NOT_REFUNDABLE, f"a {payment.status} payment moved no money"
        )
    points = redemption.requested_points(session, body, payment)
    if points is not None and "amount" not in body:
        # Points only (or a redemption's default: every leg's rest, its money leg maybe spent).
        amount_minor = _money_left_minor(payment) if "points" not in body else 0
    else:
        amount_minor = _amount(body, payment)
        if amount_minor <= 0:
            raise ApiError(
                ErrorCode.REFUND_EXCEEDS_PAYMENT, "this payment is already fully refunded"
            )
    reply: dict[str, Any] = {}
    # Points before money, as a redemption moves them: two transactions touching the same
    # user's and merchant's accounts lock them in one order, so they cannot deadlock.
    if points is not None:
        reply["points_refund_id"] = redemption.refund_points(session, payment, points, now_s)
        reply["points"] = points
    if amount_minor > 0:
        reply |= _refund_money(session, payment, amount_minor, now_s, refunded_seen_minor)
    if not reply:
        raise ApiError(ErrorCode.REFUND_EXCEEDS_PAYMENT, "this payment is already fully refunded")
    session.refresh(payment)
    told = payment_json(payment)
    refund_json = dict(reply)
    if amount_minor > 0:
        refund_json |= {"amount_minor": amount_minor, "currency": payment.currency}
    events.record(session, told, events.REFUNDED, now_s, extra={"refund": refund_json})
    return 201, reply | {"payment": told}


def _refund_money(
    session: Session,
    payment: Payment,
    amount_minor: int,
    now_s: float,
    refunded_seen_minor: int | None,
) -> dict[str, Any]:
    """The money refund: bounded by a conditional UPDATE on the payment's money leg."""
    unchanged = (
        () if refunded_seen_minor is None else (Payment.refunded_minor == refunded_seen_minor,)
    )
    bounded = session.execute(
        update(Payment)
        .where(
            Payment.id == payment.id,
            Payment.refunded_minor + amount_minor + Payment.points_value_minor
            <= Payment.amount_minor,
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
        left = Money(_money_left_minor(payment), payment.currency)
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
    return {
        "refund_id": refund_row.id,
        "amount": format_amount(Money(amount_minor, payment.currency)),
    }
