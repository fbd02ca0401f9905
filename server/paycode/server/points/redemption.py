"""A merchant redeems a user's points under a mandate, with money for the rest (docs/spec.md
§16): one database transaction that counts the points against the mandate (its conditional
UPDATE decides the caps and the race with revocation), writes one payment, moves the points
user -> merchant and the money user -> merchant. Any refusal raises ApiError, and the caller's
savepoint (paycode.server.http.idempotency.run_once) rolls all of it back: nothing moved.

The points' own ledger: granted from the system PTS account (`paycode-server points grant`),
held in accounts of owner kinds pts_user / pts_mrch, refunded merchant -> user.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import update
from sqlalchemy.orm import Session

from paycode.server.books import ledger
from paycode.server.charge.payment_rows import add_succeeded
from paycode.server.charge.planning import ORDER_ID_CHARS_MAX, payment_json
from paycode.server.database.models import SYSTEM, Account, Merchant, Payment, new_id
from paycode.server.database.points_models import (
    CHARGE_KIND,
    GRANT_KIND,
    POINTS_FUNDING,
    POINTS_MERCHANT,
    POINTS_USER,
    REFUND_KIND,
    PointsMandate,
    PointsRefund,
)
from paycode.server.http.request_fields import money_fields, string_field
from paycode.server.notifications import events
from paycode.server.points.mandates import ID_CHARS_MAX, deduct
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.errors import ApiError
from paycode.shared.points import POINTS_ASSET, POINTS_MAX, is_count, points_value_minor

CODE_VERSION_POINTS: Final = "points"
"""What a redemption shows as its payment's code version."""


def points_account(session: Session, owner_kind: str, owner_id: str) -> Account:
    return ledger.open_account(session, owner_kind, owner_id, POINTS_ASSET)


def grant(session: Session, user_id: str, points: int, now_s: float) -> int:
    """Credit a user `points` from the system PTS account; the new balance in points."""
    assert is_count(points, POINTS_MAX)
    funding = ledger.open_account(session, SYSTEM, POINTS_FUNDING, POINTS_ASSET)
    held = points_account(session, POINTS_USER, user_id)
    ledger.transfer(
        session, kind=GRANT_KIND, debit=funding, credit=held, amount_minor=points, now_s=now_s
    )
    return ledger.balance_minor(session, held.id)


def points_balance(session: Session, user_id: str) -> int:
    held = ledger.account(session, POINTS_USER, user_id, POINTS_ASSET)
    return 0 if held is None else held.balance_minor


def _points(value: object, name: str = "points") -> int:
    if not is_count(value, POINTS_MAX):
        raise ApiError(ErrorCode.POINTS_INVALID, f"'{name}' must be a whole number 1-{POINTS_MAX}")
    assert isinstance(value, int)
    return value


def redeem(
    session: Session,
    merchant_id: str,
    terminal_id: str,
    body: dict[str, Any],
    *,
    now_s: float,
    day: int,
) -> tuple[int, dict[str, Any]]:
    """POST /v1/points/redemptions: the payment with both legs, or ApiError."""
    mandate_id = string_field(body, "mandate_id", max_chars=ID_CHARS_MAX)
    order_id = string_field(body, "merchant_order_id", max_chars=ORDER_ID_CHARS_MAX)
    money = money_fields(body)
    points = _points(body.get("points"))
    mandate = session.get(PointsMandate, mandate_id)
    if mandate is None or mandate.merchant_id != merchant_id:
        raise ApiError(ErrorCode.NOT_FOUND, "no such mandate for this merchant")
    if money.currency != mandate.currency:
        raise ApiError(ErrorCode.CURRENCY_MISMATCH, f"this mandate is in {mandate.currency}")
    value_minor = points_value_minor(points, mandate.rate_points, mandate.rate_minor)
    if value_minor is None:
        raise ApiError(
            ErrorCode.POINTS_INVALID,
            f"{points} points are not a whole number of minor units at "
            f"{mandate.rate_points} points = {mandate.rate_minor} minor units",
        )
    if value_minor > money.amount_minor:
        raise ApiError(ErrorCode.POINTS_INVALID, "the points are worth more than the amount")
    deduct(session, mandate, points, now_s=now_s, day=day)
    payment = Payment(
        id=new_id("pay"),
        merchant_id=merchant_id,
        terminal_id=terminal_id,
        user_id=mandate.user_id,
        device_id=None,
        amount_minor=money.amount_minor,
        currency=money.currency,
        refunded_minor=0,
        status=PaymentStatus.SUCCEEDED,
        merchant_order_id=order_id,
        code_version=CODE_VERSION_POINTS,
        created_at_s=now_s,
        mandate_id=mandate.id,
        points=points,
        points_value_minor=value_minor,
        points_refunded=0,
    )
    add_succeeded(session, payment)
    _move_points(session, mandate, payment, now_s)
    _move_money(session, mandate, payment, now_s)
    told = payment_json(payment)
    merchant = session.get(Merchant, merchant_id)
    notify = merchant is not None and merchant.notify_url is not None
    events.record(session, told, events.SUCCEEDED, now_s, notify=notify)
    return 201, told


def _move_points(session: Session, mandate: PointsMandate, payment: Payment, now_s: float) -> None:
    held = ledger.account(session, POINTS_USER, mandate.user_id, POINTS_ASSET)
    if held is None:
        raise ApiError(ErrorCode.INSUFFICIENT_POINTS, "the user holds no points")
    payee = points_account(session, POINTS_MERCHANT, mandate.merchant_id)
    try:
        ledger.transfer(
            session,
            kind=CHARGE_KIND,
            debit=held,
            credit=payee,
            amount_minor=payment.points,
            now_s=now_s,
            payment_id=payment.id,
        )
    except ApiError as error:
        if error.code != ErrorCode.INSUFFICIENT_FUNDS:
            raise
        raise ApiError(
            ErrorCode.INSUFFICIENT_POINTS, "the user's points do not cover the points asked"
        ) from error


def _move_money(session: Session, mandate: PointsMandate, payment: Payment, now_s: float) -> None:
    """The money leg (the price less the points' value), if any: an ordinary `charge`."""
    money_minor = payment.amount_minor - payment.points_value_minor
    if money_minor == 0:
        return
    payer = ledger.account(session, "user", mandate.user_id, payment.currency)
    payee = ledger.account(session, "merchant", mandate.merchant_id, payment.currency)
    if payer is None:
        raise ApiError(ErrorCode.INSUFFICIENT_FUNDS, f"the user has no {payment.currency} account")
    assert payee is not None, "a merchant's account is opened with the merchant"
    ledger.transfer(
        session,
        kind="charge",
        debit=payer,
        credit=payee,
        amount_minor=money_minor,
        now_s=now_s,
        payment_id=payment.id,
    )


def requested_points(session: Session, body: dict[str, Any], payment: Payment) -> int | None:
    """The points a refund request returns: `points`, or all that is left when neither
    `points` nor `amount` is given; None: the request returns no points. Refunded points,
    like redeemed ones, are worth a whole number of minor units at the mandate's rate, so
    every points line of the books has an exact money value."""
    if "points" in body:
        if payment.mandate_id is None:
            raise ApiError(ErrorCode.POINTS_INVALID, "this payment has no points leg")
        points = _points(body["points"])
        mandate = session.get(PointsMandate, payment.mandate_id)
        assert mandate is not None, "a redemption names its mandate"
        if points_value_minor(points, mandate.rate_points, mandate.rate_minor) is None:
            raise ApiError(
                ErrorCode.POINTS_INVALID,
                f"{points} points are not a whole number of minor units at the mandate's rate",
            )
        return points
    if "amount" in body or payment.mandate_id is None:
        return None
    left = payment.points - payment.points_refunded  # exact: redeemed and refunded parts are
    return left or None


def refund_points(session: Session, payment: Payment, points: int, now_s: float) -> str:
    """Return `points` of the payment's points leg to the user, bounded by what that leg has
    left (a conditional UPDATE, so concurrent refunds cannot exceed it). The mandate's day
    usage is not given back: a cap counts what was deducted, not what was kept."""
    bounded = session.execute(
        update(Payment)
        .where(Payment.id == payment.id, Payment.points_refunded + points <= Payment.points)
        .values(points_refunded=Payment.points_refunded + points),
        execution_options={"synchronize_session": False},
    )
    if bounded.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(payment)
        left = payment.points - payment.points_refunded
        raise ApiError(ErrorCode.REFUND_EXCEEDS_PAYMENT, f"at most {left} points can be refunded")
    merchant_points = ledger.account(session, POINTS_MERCHANT, payment.merchant_id, POINTS_ASSET)
    user_points = ledger.account(session, POINTS_USER, payment.user_id or "", POINTS_ASSET)
    assert merchant_points is not None and user_points is not None, "the redemption opened them"
    ledger.transfer(
        session,
        kind=REFUND_KIND,
        debit=merchant_points,
        credit=user_points,
        amount_minor=points,
        now_s=now_s,
        payment_id=payment.id,
    )
    row = PointsRefund(id=new_id("prf"), payment_id=payment.id, points=points, created_at_s=now_s)
    session.add(row)
    return row.id
