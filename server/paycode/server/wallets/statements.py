"""What a wallet reads online: the balances of a user's accounts and the payment history."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from paycode.server.charge.planning import points_leg_json
from paycode.server.database.models import (
    Account,
    Merchant,
    Payment,
)
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError
from paycode.shared.money import Money, format_amount
from paycode.shared.timestamps import iso_time

HISTORY_LIMIT_DEFAULT = 20


HISTORY_LIMIT_MAX = 100


def balances(session: Session, user_id: str) -> list[dict[str, object]]:
    rows = session.scalars(
        select(Account)
        .where(Account.owner_kind == "user", Account.owner_id == user_id)
        .order_by(Account.currency)
    ).all()
    return [
        {
            "currency": row.currency,
            "balance": format_amount(Money(row.balance_minor, row.currency)),
            "balance_minor": row.balance_minor,
        }
        for row in rows
    ]


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return HISTORY_LIMIT_DEFAULT
    digits = raw.isascii() and raw.isdigit() and len(raw) <= 3
    if not digits or not 1 <= int(raw) <= HISTORY_LIMIT_MAX:
        raise ApiError(
            ErrorCode.INVALID_REQUEST, f"'limit' must be an integer 1-{HISTORY_LIMIT_MAX}"
        )
    return int(raw)


def history(session: Session, user_id: str, limit: int) -> list[dict[str, object]]:
    """This user's payments, newest first (failed ones too: their code was still used)."""
    assert 1 <= limit <= HISTORY_LIMIT_MAX
    rows = session.execute(
        select(Payment, Merchant.name)
        .join(Merchant, Merchant.id == Payment.merchant_id)
        .where(Payment.user_id == user_id)
        .order_by(Payment.created_at_s.desc(), Payment.id.desc())
        .limit(limit)
    ).all()
    return [_history_item(payment, merchant) for payment, merchant in rows]


def _history_item(payment: Payment, merchant: str) -> dict[str, object]:
    item: dict[str, object] = {
        "payment_id": payment.id,
        "created_at": iso_time(payment.created_at_s),
        "merchant": merchant,
        "amount": format_amount(Money(payment.amount_minor, payment.currency)),
        "currency": payment.currency,
        "status": payment.status,
        "refunded": format_amount(Money(payment.refunded_minor, payment.currency)),
    }
    if payment.mandate_id is not None:
        # `amount` is the whole price: the balance moved by the money leg only.
        item["points"] = points_leg_json(payment)
    if payment.online_issuer_id is not None:
        item["issued_online"] = True  # paid by a code the server issued (docs/spec.md §14)
    return item
