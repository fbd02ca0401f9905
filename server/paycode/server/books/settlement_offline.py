"""Offline payments in a merchant's settlement file (docs/offline.md §6.5).

An offline payment is an ordinary charge line (code version v4) that also names its acceptance
(`offline_ref`). What escrow could not pay is credited to the merchant's `loss` account: those
credits are lines of their own kind, `offline_loss`, with the acceptance and its result, and a
total of their own: a loss is not money the merchant holds, so it is never in the net. Both are
checked against an independent aggregate of the acceptances, as the file's other lines are
against the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from paycode.server.database.models import Account, LedgerEntry, LedgerTransaction
from paycode.server.database.offline_models import LOSS, LOSS_KIND, OfflineAcceptance
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

ROWS_MAX: Final = 100_000
"""As settlement.LINES_MAX: one merchant's day."""


@dataclass(frozen=True, slots=True)
class LossRow:
    transaction_id: str
    created_at_s: float
    currency: str
    amount_minor: int
    acceptance_id: str
    result: str
    terminal_id: str
    merchant_order_id: str | None


def _mismatch(detail: str) -> ApiError:
    return ApiError(
        ErrorCode.LEDGER_MISMATCH,
        f"the settlement does not match the ledger ({detail}); run `paycode-server reconcile`",
    )


def acceptance_refs(session: Session, payment_ids: set[str]) -> dict[str, str]:
    """payment id -> the acceptance it paid, for the v4 payments among `payment_ids`."""
    if not payment_ids:
        return {}
    rows = session.execute(
        select(OfflineAcceptance.payment_id, OfflineAcceptance.id).where(
            OfflineAcceptance.payment_id.in_(payment_ids)
        )
    )
    return {str(payment_id): acceptance_id for payment_id, acceptance_id in rows}


class Window(Protocol):
    """settlement.DayWindow: [start_s, end_s)."""

    @property
    def start_s(self) -> int: ...

    @property
    def end_s(self) -> int: ...


def loss_rows(session: Session, merchant_id: str, window: Window) -> list[LossRow]:
    """The credits to the merchant's loss accounts in the window, in write order, each with
    the acceptance that booked it; ledger_mismatch when one has none or the sums differ."""
    in_window = (
        LedgerTransaction.created_at_s >= window.start_s,
        LedgerTransaction.created_at_s < window.end_s,
    )
    rows = session.execute(
        select(
            LedgerTransaction.id,
            LedgerTransaction.kind,
            LedgerTransaction.created_at_s,
            LedgerEntry.currency,
            LedgerEntry.amount_minor,
            OfflineAcceptance.id,
            OfflineAcceptance.result,
            OfflineAcceptance.terminal_id,
            OfflineAcceptance.merchant_order_id,
        )
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .join(Account, Account.id == LedgerEntry.account_id)
        .outerjoin(OfflineAcceptance, OfflineAcceptance.loss_transaction_id == LedgerTransaction.id)
        .where(Account.owner_kind == LOSS, Account.owner_id == merchant_id, *in_window)
        .order_by(LedgerEntry.id)
        .limit(ROWS_MAX + 1)
    ).all()
    if len(rows) > ROWS_MAX:
        raise ApiError(ErrorCode.SETTLEMENT_TOO_LARGE, f"more than {ROWS_MAX} offline losses")
    found = []
    for txn_id, kind, at_s, currency, amount_minor, acc_id, result, terminal, order in rows:
        if kind != LOSS_KIND or acc_id is None:
            raise _mismatch(f"{kind} {txn_id} moved a loss account without an acceptance")
        found.append(
            LossRow(txn_id, at_s, currency, int(amount_minor), acc_id, result, terminal, order)
        )
    booked = session.execute(
        select(OfflineAcceptance.currency, func.sum(OfflineAcceptance.loss_minor))
        .join(LedgerTransaction, LedgerTransaction.id == OfflineAcceptance.loss_transaction_id)
        .where(OfflineAcceptance.merchant_id == merchant_id, *in_window)
        .group_by(OfflineAcceptance.currency)
    ).all()
    expected = {currency: int(total) for currency, total in booked if total}
    listed: dict[str, int] = {}
    for row in found:
        listed[row.currency] = listed.get(row.currency, 0) + row.amount_minor
    if listed != expected:
        raise _mismatch(f"offline losses: acceptances booked {expected}, the ledger {listed}")
    return found
