"""Points redemptions in a merchant's settlement file (docs/spec.md §16).

A redemption's money leg is an ordinary charge line. Its points are lines of their own,
`points_charge` (points credited to the merchant's points account) and `points_refund` (points
given back), each with its points and their money value at the mandate's rate, and a total of
their own: points are not money the merchant holds, so they are never in the money net. The
lines are checked against an independent aggregate of the merchant's points account, as the
file's other lines are against the ledger.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from paycode.server.database.models import Account, LedgerEntry, LedgerTransaction, Payment
from paycode.server.database.points_models import (
    POINTS_MERCHANT,
    REFUND_KIND,
    PointsMandate,
    PointsRefund,
)
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError
from paycode.shared.points import points_value_minor

ROWS_MAX: Final = 100_000
"""As settlement.LINES_MAX: one merchant's day."""


@dataclass(frozen=True, slots=True)
class PointsRow:
    transaction_id: str
    kind: str
    created_at_s: float
    points: int
    """Signed: positive credits the merchant's points, negative gives them back."""
    currency: str
    value_minor: int
    """The points' money value at the mandate's rate, signed like `points`."""
    payment_id: str
    points_refund_id: str | None
    merchant_order_id: str | None
    terminal_id: str | None


class Window(Protocol):
    """settlement.DayWindow: [start_s, end_s)."""

    @property
    def start_s(self) -> int: ...

    @property
    def end_s(self) -> int: ...


def _mismatch(detail: str) -> ApiError:
    return ApiError(
        ErrorCode.LEDGER_MISMATCH,
        f"the settlement does not match the ledger ({detail}); run `paycode-server reconcile`",
    )


def points_rows(session: Session, merchant_id: str, window: Window) -> list[PointsRow]:
    """The movements of the merchant's points account in the window, in write order, each
    with its redemption (and points refund); ledger_mismatch when they do not add up."""
    in_window = (
        LedgerTransaction.created_at_s >= window.start_s,
        LedgerTransaction.created_at_s < window.end_s,
    )
    mine = (Account.owner_kind == POINTS_MERCHANT, Account.owner_id == merchant_id)
    rows = session.execute(
        select(
            LedgerTransaction.id,
            LedgerTransaction.kind,
            LedgerTransaction.created_at_s,
            LedgerEntry.amount_minor,
            Payment.id,
            Payment.currency,
            Payment.merchant_order_id,
            Payment.terminal_id,
            PointsMandate.rate_points,
            PointsMandate.rate_minor,
        )
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .join(Account, Account.id == LedgerEntry.account_id)
        .outerjoin(Payment, Payment.id == LedgerTransaction.payment_id)
        .outerjoin(PointsMandate, PointsMandate.id == Payment.mandate_id)
        .where(*mine, *in_window)
        .order_by(LedgerEntry.id)
        .limit(ROWS_MAX + 1)
    ).all()
    if len(rows) > ROWS_MAX:
        raise ApiError(
            ErrorCode.SETTLEMENT_TOO_LARGE, f"more than {ROWS_MAX} points movements in one day"
        )
    refunds = _refunds(session, {row[4] for row in rows if row[1] == REFUND_KIND}, window)
    found = [_row(tuple(row), refunds) for row in rows]
    ledger_count, ledger_sum = session.execute(
        select(func.count(), func.coalesce(func.sum(LedgerEntry.amount_minor), 0))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .join(Account, Account.id == LedgerEntry.account_id)
        .where(*mine, *in_window)
    ).one()
    if (int(ledger_count), int(ledger_sum)) != (len(found), sum(row.points for row in found)):
        raise _mismatch(f"points: the ledger has {ledger_count} for {ledger_sum}")
    return found


RefundKey = tuple[str, float, int]


def _refunds(session: Session, payment_ids: set[str], window: Window) -> dict[RefundKey, list[str]]:
    """(payment, time, points) -> points refund ids: a refund row and its transaction are
    written with the same time and points (paycode.server.points.redemption.refund_points)."""
    found: dict[RefundKey, list[str]] = defaultdict(list)
    if not payment_ids:
        return found
    for refund_id, payment_id, created_at_s, points in session.execute(
        select(
            PointsRefund.id, PointsRefund.payment_id, PointsRefund.created_at_s, PointsRefund.points
        )
        .where(
            PointsRefund.payment_id.in_(payment_ids),
            PointsRefund.created_at_s >= window.start_s,
            PointsRefund.created_at_s < window.end_s,
        )
        .order_by(PointsRefund.id)
    ):
        found[(payment_id, float(created_at_s), int(points))].append(refund_id)
    return found


def _row(row: Sequence[Any], refunds: dict[RefundKey, list[str]]) -> PointsRow:
    (txn_id, kind, at_s, points, payment_id, currency, order_id, terminal_id, rate_points,
     rate_minor) = row  # fmt: skip
    if payment_id is None or rate_points is None:
        raise _mismatch(f"points movement {txn_id} names no redemption")
    value = points_value_minor(abs(int(points)), int(rate_points), int(rate_minor))
    if value is None:
        raise _mismatch(f"points movement {txn_id} is not a whole number of minor units")
    refund_id = None
    if kind == REFUND_KIND:
        candidates = refunds.get((payment_id, float(at_s), -int(points)), [])
        if not candidates:
            raise _mismatch(f"points refund transaction {txn_id} has no matching refund")
        refund_id = candidates.pop(0)
    sign = 1 if int(points) > 0 else -1
    return PointsRow(
        txn_id, kind, float(at_s), int(points), currency, sign * value, payment_id, refund_id,
        order_id, terminal_id,
    )  # fmt: skip
