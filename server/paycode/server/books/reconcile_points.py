"""Reconciliation of points redemptions (docs/spec.md §16), called by `reconcile.reconcile` on
the same snapshot. The PTS entries summing to zero, and each account's balance matching its
entries, are the general checks (every asset is summed on its own); these are the rest:

    points_charge_mismatch   a redemption's points_charge transactions are not exactly one
                             moving -points from the user's points account, +points to the
                             merchant's (none for a payment that did not succeed)
    points_refund_mismatch   points_refunded is not the sum of its points refunds, or their
                             transactions are not merchant -> user of that sum
    points_value_mismatch    points_value_minor is not the points at the mandate's rate, or is
                             more than the amount
    mandate_usage_mismatch   a mandate's used_points is not the sum of its redemptions' points,
                             or a redemption exceeds its per-payment cap, or today's usage
                             exceeds the per-day cap
    transaction_orphan       a points_charge or points_refund names no redemption
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from paycode.server.books.ledger_moves import Side, ledger_moves
from paycode.server.database.models import LedgerTransaction, Payment
from paycode.server.database.points_models import (
    CHARGE_KIND,
    POINTS_MERCHANT,
    POINTS_USER,
    REFUND_KIND,
    PointsMandate,
    PointsRefund,
)
from paycode.shared.codes import PaymentStatus
from paycode.shared.points import POINTS_ASSET, points_value_minor

LISTED_MAX: Final = 50


class Findings(Protocol):
    def add(self, code: str, subject: str, detail: str) -> None: ...


def check_points(session: Session, report: Findings, *, batch_rows: int, batches_max: int) -> None:
    _check_redemptions(session, report, batch_rows, batches_max)
    _check_mandates(session, report, batch_rows, batches_max)
    _check_orphans(session, report)


def _check_redemptions(
    session: Session, report: Findings, batch_rows: int, batches_max: int
) -> None:
    last_id = ""
    for _page in range(batches_max):
        page = session.execute(
            select(Payment, PointsMandate)
            .outerjoin(PointsMandate, PointsMandate.id == Payment.mandate_id)
            .where(Payment.id > last_id, Payment.mandate_id.is_not(None))
            .order_by(Payment.id)
            .limit(batch_rows)
        ).all()
        if not page:
            return
        last_id = page[-1][0].id
        ids = [payment.id for payment, _ in page]
        sides, counts = ledger_moves(session, ids, (CHARGE_KIND, REFUND_KIND))
        moved = _Moved(sides, counts, _refunds(session, ids))
        for payment, mandate in page:
            _check_one(report, payment, mandate, moved)
        session.expunge_all()
    report.add("reconcile_incomplete", "payments", "more points redemptions than the bound")


def _refunds(session: Session, payment_ids: list[str]) -> dict[str, tuple[int, int]]:
    """payment -> (count, points) of its points refunds."""
    return {
        payment_id: (int(count), int(points))
        for payment_id, count, points in session.execute(
            select(PointsRefund.payment_id, func.count(), func.sum(PointsRefund.points))
            .where(PointsRefund.payment_id.in_(payment_ids))
            .group_by(PointsRefund.payment_id)
        )
    }


def _legs(payment: Payment, points: int, to_merchant: bool) -> dict[Side, int]:
    if points == 0:
        return {}
    user: Side = (POINTS_USER, payment.user_id or "", POINTS_ASSET)
    merchant: Side = (POINTS_MERCHANT, payment.merchant_id, POINTS_ASSET)
    payer, payee = (user, merchant) if to_merchant else (merchant, user)
    return {payer: -points, payee: points}


@dataclass(frozen=True, slots=True)
class _Moved:
    """One page of redemptions' ledger movements and points refunds."""

    sides: dict[tuple[str, str], dict[Side, int]]
    counts: dict[tuple[str, str], int]
    refunded: dict[str, tuple[int, int]]


def _check_one(
    report: Findings, payment: Payment, mandate: PointsMandate | None, moved: _Moved
) -> None:
    if mandate is None:
        report.add("mandate_usage_mismatch", payment.id, "names a mandate that does not exist")
        return
    sides, counts, refunded = moved.sides, moved.counts, moved.refunded
    succeeded = payment.status == PaymentStatus.SUCCEEDED
    charges = counts.get((payment.id, CHARGE_KIND), 0)
    expected = _legs(payment, payment.points, to_merchant=True) if succeeded else {}
    found = sides.get((payment.id, CHARGE_KIND), {})
    if charges != (1 if succeeded else 0) or found != expected:
        detail = f"{charges} points_charge transaction(s) moving {found or 'nothing'}"
        report.add("points_charge_mismatch", payment.id, detail)
    refund_count, refund_points = refunded.get(payment.id, (0, 0))
    refund_found = sides.get((payment.id, REFUND_KIND), {})
    if (
        payment.points_refunded != refund_points
        or counts.get((payment.id, REFUND_KIND), 0) != refund_count
        or refund_found != _legs(payment, refund_points, to_merchant=False)
    ):
        detail = (
            f"points_refunded {payment.points_refunded}, "
            f"{refund_count} refund(s) of {refund_points}"
        )
        report.add("points_refund_mismatch", payment.id, detail)
    value = points_value_minor(payment.points, mandate.rate_points, mandate.rate_minor)
    if value != payment.points_value_minor or payment.points_value_minor > payment.amount_minor:
        detail = f"{payment.points} points recorded as worth {payment.points_value_minor}"
        report.add("points_value_mismatch", payment.id, detail)
    if payment.points > mandate.cap_per_payment_points:
        detail = f"{payment.points} points above the cap {mandate.cap_per_payment_points}"
        report.add("mandate_usage_mismatch", payment.id, detail)


def _check_mandates(session: Session, report: Findings, batch_rows: int, batches_max: int) -> None:
    last_id = ""
    for _page in range(batches_max):
        page = session.execute(
            select(
                PointsMandate.id,
                PointsMandate.used_points,
                PointsMandate.day_used_points,
                PointsMandate.cap_per_day_points,
            )
            .where(PointsMandate.id > last_id)
            .order_by(PointsMandate.id)
            .limit(batch_rows)
        ).all()
        if not page:
            return
        last_id = page[-1].id
        used = dict(
            session.execute(
                select(Payment.mandate_id, func.sum(Payment.points))
                .where(
                    Payment.mandate_id.in_([row.id for row in page]),
                    Payment.status == PaymentStatus.SUCCEEDED,
                )
                .group_by(Payment.mandate_id)
            ).all()
        )
        for mandate_id, used_points, day_used_points, cap_per_day_points in page:
            paid = int(used.get(mandate_id) or 0)
            if paid != used_points or day_used_points > cap_per_day_points:
                detail = (
                    f"used_points {used_points}, redemptions {paid}; today "
                    f"{day_used_points} of {cap_per_day_points}"
                )
                report.add("mandate_usage_mismatch", mandate_id, detail)
    report.add("reconcile_incomplete", "points_mandates", "more rows than the batch bound")


def _check_orphans(session: Session, report: Findings) -> None:
    orphans = session.scalars(
        select(LedgerTransaction.id)
        .outerjoin(Payment, Payment.id == LedgerTransaction.payment_id)
        .where(
            LedgerTransaction.kind.in_((CHARGE_KIND, REFUND_KIND)),
            or_(Payment.id.is_(None), Payment.mandate_id.is_(None)),
        )
        .order_by(LedgerTransaction.id)
        .limit(LISTED_MAX)
    )
    for transaction_id in orphans:
        report.add("transaction_orphan", transaction_id, "a points movement of no redemption")
