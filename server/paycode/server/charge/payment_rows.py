"""Writing a succeeded payment where a merchant's order id may already be paid."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.database.models import Payment
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

ORDER_PAID = "this merchant_order_id already has a successful payment"


def add_succeeded(session: Session, payment: Payment, *, detail: str = ORDER_PAID) -> None:
    """Insert `payment` (status succeeded) in a savepoint. The partial UNIQUE index on a
    merchant's succeeded order ids decides a reused one, race or not: `duplicate_order` with
    `detail`, and nothing of the payment is written."""
    try:
        with session.begin_nested():
            session.add(payment)
            session.flush()
    except IntegrityError as error:
        raise ApiError(ErrorCode.DUPLICATE_ORDER, detail) from error
