"""Settlement files: one merchant's money movements of one day, as CSV (docs/operations.md).

One line per ledger entry of the merchant's accounts whose transaction was written that day:
every successful payment (charges, confirmed step-up payments and collection-QR payments are
all `charge` transactions) credits the merchant, every refund debits it. Payments that moved
no money (failed, pending, declined, cancelled) are not in the file.

A day is [00:00, 24:00) in the time zone of the password-free limits (LimitSettings
.day_offset_minutes, PAYCODE_LIMIT_DAY_OFFSET_MINUTES, default UTC+8), and a movement belongs
to the day its ledger transaction was written: a step-up payment settles on the day it was
confirmed, not the day it was charged.

Fees (PAYCODE_FEE_BPS, basis points, default 0) are reported, never moved: each charge line's
fee is round-half-up(amount_minor x bps / 10000) in integer minor units; refunds carry no fee
(the fee is not returned).

Before the file is produced, its totals are checked against the ledger (the sum and count of
the account's entries in the window, the refund rows and the successful payments charged in
the window); any difference fails with `ledger_mismatch` and no file at all.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from paycode.server.books.reconcile import snapshot_session
from paycode.server.books.settlement_offline import (
    LossRow,
    acceptance_refs,
    loss_rows,
)
from paycode.server.books.settlement_points import PointsRow, points_rows
from paycode.server.database.models import (
    Account,
    LedgerEntry,
    LedgerTransaction,
    Merchant,
    Payment,
    Refund,
)
from paycode.server.database.offline_models import LOSS_KIND
from paycode.server.safety.limits import DAY_S, LimitSettings
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.errors import ApiError, ConfigError

BATCH_ROWS: Final = 1000
LINES_MAX: Final = 100_000
"""One merchant's day; beyond it the file is refused (settlement_too_large), not cut short."""
FEE_BPS_MAX: Final = 10_000
BPS_PER_UNIT: Final = 10_000
DATE_PATTERN: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
CHARGE: Final = "charge"
REFUND: Final = "refund"
EPOCH: Final = dt.date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class SettlementSettings:
    fee_bps: int = 0  # PAYCODE_FEE_BPS: the merchant fee rate reported in the file

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> SettlementSettings:
        """From the environment variables in `env` (ServerConfig.from_env hands them in)."""
        raw = env.get("PAYCODE_FEE_BPS", "")
        if not raw:
            return cls()
        if not raw.isascii() or not raw.isdigit() or int(raw) > FEE_BPS_MAX:
            raise ConfigError(f"PAYCODE_FEE_BPS must be a whole number 0-{FEE_BPS_MAX}")
        return cls(fee_bps=int(raw))


@dataclass(frozen=True, slots=True)
class DayWindow:
    day: dt.date
    start_s: int
    """00:00 of the day in the limits' time zone, as Unix seconds (included)."""
    end_s: int
    """00:00 of the next day (excluded)."""


@dataclass(frozen=True, slots=True)
class Line:
    transaction_id: str
    kind: str
    created_at_s: float
    currency: str
    amount_minor: int
    """Signed: positive credits the merchant, negative debits it."""
    fee_minor: int
    payment_id: str | None = None
    refund_id: str | None = None
    merchant_order_id: str | None = None
    terminal_id: str | None = None
    code_version: str | None = None
    offline_ref: str | None = None
    """The acceptance an offline payment or loss settled (books.settlement_offline)."""
    offline_result: str | None = None
    """A loss line's acceptance result (paid_short, unpaid, late, refused_invalid)."""


@dataclass(frozen=True, slots=True)
class Total:
    currency: str
    count: int
    net_minor: int
    fee_minor: int


@dataclass(frozen=True, slots=True)
class Settlement:
    merchant_id: str
    merchant_name: str
    window: DayWindow
    lines: tuple[Line, ...]
    totals: tuple[Total, ...]
    """One per currency the merchant holds an account in, even with no movement."""
    losses: tuple[Line, ...] = ()
    """Credits to the merchant's offline-loss account: not money it holds, not in `totals`."""
    loss_totals: tuple[Total, ...] = ()
    points: tuple[PointsRow, ...] = ()
    """Movements of the merchant's points account (books.settlement_points): not money, not
    in `totals`."""


# -- the day ----------------------------------------------------------------------------------


def parse_day(text: str | None) -> dt.date:
    """A calendar date written YYYY-MM-DD; `date_invalid` otherwise."""
    if not isinstance(text, str) or DATE_PATTERN.fullmatch(text) is None:
        shown = "nothing" if not text else repr(text[:32])
        raise ApiError(ErrorCode.DATE_INVALID, f"the date must be YYYY-MM-DD, got {shown}")
    try:
        return dt.date.fromisoformat(text)
    except ValueError as error:
        raise ApiError(ErrorCode.DATE_INVALID, f"{text} is not a calendar date") from error


def day_window(day: dt.date, limits: LimitSettings) -> DayWindow:
    """The day's bounds: the same days LimitSettings.day counts (its inverse)."""
    start_s = (day - EPOCH).days * DAY_S - limits.day_offset_minutes * 60
    window = DayWindow(day=day, start_s=start_s, end_s=start_s + DAY_S)
    assert limits.day(window.start_s) == limits.day(window.end_s - 1) == (day - EPOCH).days
    return window


def fee_minor(amount_minor: int, fee_bps: int) -> int:
    """round-half-up(amount_minor x fee_bps / 10000), integers only."""
    assert amount_minor >= 0 and 0 <= fee_bps <= FEE_BPS_MAX
    return (amount_minor * fee_bps + BPS_PER_UNIT // 2) // BPS_PER_UNIT


# -- building the file ------------------------------------------------------------------------


def settle(
    session: Session, merchant: Merchant, window: DayWindow, settings: SettlementSettings
) -> Settlement:
    """The merchant's settlement for the window, checked against the ledger."""
    rows = session.execute(
        select(Account.id, Account.currency).where(
            Account.owner_kind == "merchant", Account.owner_id == merchant.id
        )
    )
    accounts = {account_id: currency for account_id, currency in rows}
    lines = _lines(session, merchant.id, accounts, window, settings.fee_bps)
    totals = _totals(lines, set(accounts.values()))
    _check_against_ledger(session, merchant.id, list(accounts), window, lines)
    losses = [_loss_line(row) for row in loss_rows(session, merchant.id, window)]
    loss_totals = _totals(losses, {line.currency for line in losses})
    points = tuple(points_rows(session, merchant.id, window))
    return Settlement(
        merchant.id, merchant.name, window, tuple(lines), totals, tuple(losses), loss_totals,
        points,
    )  # fmt: skip


def _loss_line(row: LossRow) -> Line:
    return Line(
        row.transaction_id, LOSS_KIND, row.created_at_s, row.currency, row.amount_minor, 0,
        merchant_order_id=row.merchant_order_id, terminal_id=row.terminal_id,
        offline_ref=row.acceptance_id, offline_result=row.result,
    )  # fmt: skip


def _lines(
    session: Session,
    merchant_id: str,
    accounts: dict[int, str],
    window: DayWindow,
    fee_bps: int,
) -> list[Line]:
    """Keyset pages of the accounts' entries in the window, in entry (write) order."""
    lines: list[Line] = []
    used_refunds: set[str] = set()
    page = _Page(merchant_id, accounts, window, fee_bps)
    last_id = 0
    for _batch in range(LINES_MAX // BATCH_ROWS + 1):
        rows = session.execute(
            select(
                LedgerEntry.id,
                LedgerEntry.account_id,
                LedgerEntry.amount_minor,
                LedgerEntry.currency,
                LedgerTransaction.id,
                LedgerTransaction.kind,
                LedgerTransaction.created_at_s,
                LedgerTransaction.payment_id,
            )
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(
                LedgerEntry.account_id.in_(list(accounts)),
                LedgerTransaction.created_at_s >= window.start_s,
                LedgerTransaction.created_at_s < window.end_s,
                LedgerEntry.id > last_id,
            )
            .order_by(LedgerEntry.id)
            .limit(BATCH_ROWS)
        ).all()
        if not rows:
            return lines
        last_id = rows[-1][0]
        lines += _page_lines(session, page, list(rows), used_refunds)
        if len(lines) > LINES_MAX:
            break
    raise ApiError(
        ErrorCode.SETTLEMENT_TOO_LARGE,
        f"more than {LINES_MAX} movements in one day: ask the operator",
    )


@dataclass(frozen=True, slots=True)
class _PaymentRef:
    """What a line needs of its payment (plain values: no ORM objects pile up over pages)."""

    id: str
    merchant_id: str
    status: str
    amount_minor: int
    """What it charged in money: a points redemption's amount less its points' value."""
    merchant_order_id: str | None
    terminal_id: str | None
    code_version: str | None


@dataclass(frozen=True, slots=True)
class _Page:
    """What every page of one settlement shares."""

    merchant_id: str
    accounts: dict[int, str]
    """Account id -> currency."""
    window: DayWindow
    fee_bps: int


def _page_lines(
    session: Session, page: _Page, rows: list[Any], used_refunds: set[str]
) -> list[Line]:
    accounts, window = page.accounts, page.window
    payment_ids = {row[7] for row in rows if row[7] is not None}
    payments = {
        row.id: _PaymentRef(*row)
        for row in session.execute(
            select(
                Payment.id,
                Payment.merchant_id,
                Payment.status,
                Payment.amount_minor - Payment.points_value_minor,  # the money leg
                Payment.merchant_order_id,
                Payment.terminal_id,
                Payment.code_version,
            ).where(Payment.id.in_(payment_ids))
        )
    }
    offline_refs = acceptance_refs(session, payment_ids)
    refund_payments = {row[7] for row in rows if row[5] == REFUND}
    refunds = _refund_candidates(session, refund_payments, window)
    lines = []
    for _entry_id, account_id, amount_minor, currency, txn_id, kind, at_s, payment_id in rows:
        if currency != accounts[account_id]:
            _mismatch(f"entry of {txn_id} is in {currency}, its account in {accounts[account_id]}")
        payment = payments.get(payment_id) if payment_id is not None else None
        line = Line(txn_id, kind, at_s, currency, int(amount_minor), 0, payment_id)
        if kind in (CHARGE, REFUND):
            line = _payment_line(line, payment, page.merchant_id, page.fee_bps)
            line = replace(line, offline_ref=offline_refs.get(payment_id or ""))
        if kind == REFUND:
            line = _with_refund(line, refunds, used_refunds)
        lines.append(line)
    return lines


def _payment_line(line: Line, payment: _PaymentRef | None, merchant_id: str, fee_bps: int) -> Line:
    """A charge or refund line, with the payment's references; checked against the payment."""
    if payment is None or payment.merchant_id != merchant_id:
        _mismatch(
            f"{line.kind} transaction {line.transaction_id} names no payment of this merchant"
        )
    assert payment is not None
    if line.kind == CHARGE and (
        payment.status != PaymentStatus.SUCCEEDED or line.amount_minor != payment.amount_minor
    ):
        _mismatch(
            f"charge {line.transaction_id} credits {line.amount_minor}, but payment "
            f"{payment.id} is {payment.status} for {payment.amount_minor}"
        )
    fee = fee_minor(line.amount_minor, fee_bps) if line.kind == CHARGE else 0
    return replace(
        line,
        fee_minor=fee,
        payment_id=payment.id,
        merchant_order_id=payment.merchant_order_id,
        terminal_id=payment.terminal_id,
        code_version=payment.code_version,
    )


def _refund_candidates(
    session: Session, payment_ids: set[str], window: DayWindow
) -> dict[tuple[str, float, int], list[str]]:
    """(payment id, time, amount) -> refund ids. A refund row and its ledger transaction are
    written with the same time and amount (paycode.server.books.refunds); that pairs them."""
    found: dict[tuple[str, float, int], list[str]] = defaultdict(list)
    if not payment_ids:
        return found
    rows = session.execute(
        select(Refund.id, Refund.payment_id, Refund.created_at_s, Refund.amount_minor)
        .where(
            Refund.payment_id.in_(payment_ids),
            Refund.created_at_s >= window.start_s,
            Refund.created_at_s < window.end_s,
        )
        .order_by(Refund.id)
    )
    for refund_id, payment_id, created_at_s, amount_minor in rows:
        found[(payment_id, float(created_at_s), int(amount_minor))].append(refund_id)
    return found


def _with_refund(
    line: Line, refunds: dict[tuple[str, float, int], list[str]], used: set[str]
) -> Line:
    key = (line.payment_id or "", float(line.created_at_s), -line.amount_minor)
    refund_id = next((rid for rid in refunds.get(key, []) if rid not in used), None)
    if refund_id is None:
        _mismatch(f"refund transaction {line.transaction_id} has no matching refund")
    assert refund_id is not None
    used.add(refund_id)
    return replace(line, refund_id=refund_id)


def _totals(lines: list[Line], currencies: set[str]) -> tuple[Total, ...]:
    counts: dict[str, list[int]] = {currency: [0, 0, 0] for currency in currencies}
    for line in lines:
        count_net_fee = counts.setdefault(line.currency, [0, 0, 0])
        count_net_fee[0] += 1
        count_net_fee[1] += line.amount_minor
        count_net_fee[2] += line.fee_minor
    return tuple(
        Total(currency, count, net_minor, fee)
        for currency, (count, net_minor, fee) in sorted(counts.items())
    )


# -- the check against the ledger -------------------------------------------------------------


def _mismatch(detail: str) -> None:
    raise ApiError(
        ErrorCode.LEDGER_MISMATCH,
        f"the settlement does not match the ledger ({detail}); run `paycode-server reconcile`",
    )


def _check_against_ledger(
    session: Session, merchant_id: str, account_ids: list[int], window: DayWindow, lines: list[Line]
) -> None:
    """The file's figures against independent SQL aggregates, per currency."""
    in_window = (
        LedgerTransaction.created_at_s >= window.start_s,
        LedgerTransaction.created_at_s < window.end_s,
    )
    movement = session.execute(
        select(LedgerEntry.currency, func.count(), func.sum(LedgerEntry.amount_minor))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(LedgerEntry.account_id.in_(account_ids), *in_window)
        .group_by(LedgerEntry.currency)
    ).all()
    charged = session.execute(
        select(
            Payment.currency,
            func.count(),
            func.sum(Payment.amount_minor - Payment.points_value_minor),
        )
        .join(LedgerTransaction, LedgerTransaction.payment_id == Payment.id)
        .where(Payment.merchant_id == merchant_id, LedgerTransaction.kind == CHARGE, *in_window)
        .group_by(Payment.currency)
    ).all()
    refunded = session.execute(
        select(Payment.currency, func.count(), func.sum(Refund.amount_minor))
        .join(Payment, Payment.id == Refund.payment_id)
        .where(
            Payment.merchant_id == merchant_id,
            Refund.created_at_s >= window.start_s,
            Refund.created_at_s < window.end_s,
        )
        .group_by(Payment.currency)
    ).all()
    _same("ledger movement", _figures(movement), _line_figures(lines, None, 1))
    _same("charged payments", _figures(charged), _line_figures(lines, CHARGE, 1))
    _same("refunds", _figures(refunded), _line_figures(lines, REFUND, -1))


def _figures(rows: Iterable[Any]) -> dict[str, tuple[int, int]]:
    return {currency: (int(count), int(sum_minor)) for currency, count, sum_minor in rows if count}


def _line_figures(lines: list[Line], kind: str | None, sign: int) -> dict[str, tuple[int, int]]:
    figures: dict[str, tuple[int, int]] = {}
    for line in lines:
        if kind is None or line.kind == kind:
            count, sum_minor = figures.get(line.currency, (0, 0))
            figures[line.currency] = (count + 1, sum_minor + sign * line.amount_minor)
    return figures


def _same(what: str, ledger: dict[str, tuple[int, int]], file: dict[str, tuple[int, int]]) -> None:
    if ledger != file:
        _mismatch(f"{what}: the ledger has {_text(ledger)}, the file {_text(file)}")


def _text(figures: dict[str, tuple[int, int]]) -> str:
    if not figures:
        return "none"
    return ", ".join(
        f"{count} for {sum_minor} minor {currency}"
        for currency, (count, sum_minor) in sorted(figures.items())
    )


def for_merchant(
    engine: Engine,
    merchant_id: str,
    date_text: str | None,
    limits: LimitSettings,
    settings: SettlementSettings,
) -> Settlement:
    """One merchant's day, read on one snapshot (GET /v1/settlement, the dashboard)."""
    window = day_window(parse_day(date_text), limits)
    with snapshot_session(engine) as session:
        merchant = session.get(Merchant, merchant_id)
        assert merchant is not None, "a terminal belongs to a merchant"
        return settle(session, merchant, window, settings)
