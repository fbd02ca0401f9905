"""What the merchant dashboard shows, read from the database: the day's volume and count,
payments per hour, outcomes (successes and each failure reason), the latest payments.

Aggregates are computed by the database (GROUP BY), so a busy day costs a few grouped scans,
not a row per payment in Python; only the latest-payments list returns rows, and it is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Integer, cast, func, select
from sqlalchemy.orm import Session

from paycode.server.books.settlement import DayWindow
from paycode.server.database.models import Payment
from paycode.shared.codes import PaymentStatus
from paycode.shared.money import Money, format_amount

HOURS_PER_DAY = 24
SECONDS_PER_HOUR = 3600
LATEST_MAX = 50
"""Payments listed on the page; older ones are in the settlement file."""
OUTCOMES_MAX = 20
"""Distinct outcomes shown; the failure codes are a fixed, small set, so this only bounds."""


class _ShownAmounts:
    """`amount` and `refunded` as the page shows them ("12.50"), from the minor units."""

    __slots__ = ()
    currency: str
    amount_minor: int
    refunded_minor: int

    @property
    def amount(self) -> str:
        return format_amount(Money(self.amount_minor, self.currency))

    @property
    def refunded(self) -> str:
        return format_amount(Money(self.refunded_minor, self.currency))


@dataclass(frozen=True, slots=True)
class Volume(_ShownAmounts):
    """Succeeded payments of one currency that day (refunds shown beside, not netted)."""

    currency: str
    count: int
    amount_minor: int
    refunded_minor: int


@dataclass(frozen=True, slots=True)
class Outcome:
    label: str
    """'succeeded', a failure code such as 'insufficient_funds', or a status ('cancelled')."""
    count: int
    ok: bool


@dataclass(frozen=True, slots=True)
class PaymentRow(_ShownAmounts):
    id: str
    created_at_s: float
    merchant_order_id: str | None
    terminal_id: str | None
    code_version: str | None
    status: str
    failure_code: str | None
    currency: str
    amount_minor: int
    refunded_minor: int

    @property
    def refundable(self) -> str | None:
        """What is left to refund, or None when nothing can be."""
        left_minor = self.amount_minor - self.refunded_minor
        if self.status != PaymentStatus.SUCCEEDED or left_minor <= 0:
            return None
        return format_amount(Money(left_minor, self.currency))


@dataclass(frozen=True, slots=True)
class Overview:
    window: DayWindow
    volumes: tuple[Volume, ...]
    attempts: int
    """Every payment attempt that day, whatever became of it."""
    per_hour: tuple[int, ...]
    """Attempts in each hour of the day, hour 0 first (the day's own time zone)."""
    outcomes: tuple[Outcome, ...]
    latest: tuple[PaymentRow, ...]


def overview(session: Session, merchant_id: str, window: DayWindow) -> Overview:
    in_day = (
        Payment.merchant_id == merchant_id,
        Payment.created_at_s >= window.start_s,
        Payment.created_at_s < window.end_s,
    )
    per_hour = _per_hour(session, in_day, window)
    outcomes = _outcomes(session, in_day)
    result = Overview(
        window=window,
        volumes=_volumes(session, in_day),
        attempts=sum(per_hour),
        per_hour=per_hour,
        outcomes=outcomes,
        latest=latest(session, merchant_id),
    )
    assert result.attempts == sum(outcome.count for outcome in outcomes) or (
        len(outcomes) == OUTCOMES_MAX
    )
    return result


def _volumes(session: Session, in_day: tuple[ColumnElement[bool], ...]) -> tuple[Volume, ...]:
    rows = session.execute(
        select(
            Payment.currency,
            func.count(),
            func.sum(Payment.amount_minor),
            func.sum(Payment.refunded_minor),
        )
        .where(*in_day, Payment.status == PaymentStatus.SUCCEEDED)
        .group_by(Payment.currency)
        .order_by(Payment.currency)
    )
    return tuple(
        Volume(currency, int(count), int(amount or 0), int(refunded or 0))
        for currency, count, amount, refunded in rows
    )


def _hour_of_day(session: Session, window: DayWindow) -> ColumnElement[int]:
    seconds = Payment.created_at_s - window.start_s
    if session.get_bind().dialect.name == "postgresql":  # CAST rounds there; floor first
        return cast(func.floor(seconds / SECONDS_PER_HOUR), Integer)
    return cast(seconds / SECONDS_PER_HOUR, Integer)  # SQLite: CAST truncates, seconds >= 0


def _per_hour(
    session: Session, in_day: tuple[ColumnElement[bool], ...], window: DayWindow
) -> tuple[int, ...]:
    hour = _hour_of_day(session, window).label("hour")
    counts = [0] * HOURS_PER_DAY
    for hour_index, count in session.execute(
        select(hour, func.count()).where(*in_day).group_by(hour)
    ):
        assert 0 <= hour_index < HOURS_PER_DAY, hour_index
        counts[hour_index] = int(count)
    return tuple(counts)


def _outcomes(session: Session, in_day: tuple[ColumnElement[bool], ...]) -> tuple[Outcome, ...]:
    rows = session.execute(
        select(Payment.status, Payment.failure_code, func.count())
        .where(*in_day)
        .group_by(Payment.status, Payment.failure_code)
        .order_by(func.count().desc())
        .limit(OUTCOMES_MAX)
    )
    return tuple(
        Outcome(
            label=failure_code or status, count=int(count), ok=status == PaymentStatus.SUCCEEDED
        )
        for status, failure_code, count in rows
    )


def latest(session: Session, merchant_id: str, limit: int = LATEST_MAX) -> tuple[PaymentRow, ...]:
    assert 0 < limit <= LATEST_MAX
    payments = session.scalars(
        select(Payment)
        .where(Payment.merchant_id == merchant_id)
        .order_by(Payment.created_at_s.desc(), Payment.id)
        .limit(limit)
    )
    return tuple(
        PaymentRow(
            id=payment.id,
            created_at_s=payment.created_at_s,
            merchant_order_id=payment.merchant_order_id,
            terminal_id=payment.terminal_id,
            code_version=payment.code_version,
            status=payment.status,
            failure_code=payment.failure_code,
            currency=payment.currency,
            amount_minor=payment.amount_minor,
            refunded_minor=payment.refunded_minor,
        )
        for payment in payments
    )
