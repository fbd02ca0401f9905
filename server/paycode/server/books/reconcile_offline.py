"""Reconciliation of offline payments (docs/offline.md §6.5), called by `reconcile.reconcile`
on the same snapshot. Pages are keyset-bounded like the rest of reconcile.

    escrow_mismatch       an escrow's entries are not +amount funded, -(its v4 payments)
                          charged and offline_return back, or the escrow has another kind
    acceptance_mismatch   an acceptance's paid/loss are not matched by its payment and its loss
                          transaction (or do not add up)
    loss_mismatch         a `loss` account's balance is not the sum of its merchant's loss_minor
    escrow_not_swept      an escrow holds money an hour after its allowance's returns_at_s
    transaction_orphan    an offline_loss transaction that no acceptance names
"""

from __future__ import annotations

from collections import defaultdict
from typing import Final, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from paycode.server.database.models import Account, LedgerEntry, LedgerTransaction, Payment
from paycode.server.database.offline_models import (
    ESCROW,
    FUND_KIND,
    LOSS,
    LOSS_KIND,
    RETURN_KIND,
    OfflineAcceptance,
    OfflineAllowance,
)
from paycode.shared.codes import PaymentStatus

CHARGE: Final = "charge"
SWEEP_LATE_S: Final = 3600
"""A worker sweeps at returns_at_s; an hour later money still in escrow means it stopped."""
NOTHING_MOVED: Final = ("duplicate", "duplicate_order")
LISTED_MAX: Final = 50


class Findings(Protocol):
    """What reconcile's Report offers: one more mismatch, or a table read incompletely."""

    def add(self, code: str, subject: str, detail: str) -> None: ...


def check_offline(
    session: Session,
    report: Findings,
    *,
    batch_rows: int,
    batches_max: int,
    now_s: float | None,
) -> None:
    _check_escrows(session, report, batch_rows, batches_max, now_s)
    _check_acceptances(session, report, batch_rows, batches_max)
    _check_losses(session, report)
    _check_loss_orphans(session, report)


def _check_escrows(
    session: Session, report: Findings, batch_rows: int, batches_max: int, now_s: float | None
) -> None:
    last_id = ""
    for _page in range(batches_max):
        page = session.scalars(
            select(OfflineAllowance)
            .where(OfflineAllowance.id > last_id)
            .order_by(OfflineAllowance.id)
            .limit(batch_rows)
        ).all()
        if not page:
            return
        last_id = page[-1].id
        ids = [allowance.id for allowance in page]
        moved = _escrow_moves(session, ids)
        paid = _paid_by_allowance(session, ids)
        balances = dict(
            session.execute(
                select(Account.owner_id, Account.balance_minor).where(
                    Account.owner_kind == ESCROW, Account.owner_id.in_(ids)
                )
            ).all()
        )
        for allowance in page:
            kinds = moved.get(allowance.id, {})
            expected = {FUND_KIND: allowance.amount_minor}
            if paid.get(allowance.id):
                expected[CHARGE] = -paid[allowance.id]
            found = {kind: total for kind, total in kinds.items() if kind != RETURN_KIND}
            if found != expected or kinds.get(RETURN_KIND, 0) > 0:
                detail = f"escrow moved {dict(sorted(kinds.items()))}, expected {expected}"
                report.add("escrow_mismatch", allowance.id, detail)
            balance = int(balances.get(allowance.id, 0))
            if now_s is not None and balance > 0 and now_s > allowance.returns_at_s + SWEEP_LATE_S:
                detail = f"{balance} left after returns_at_s {allowance.returns_at_s:.0f}"
                report.add("escrow_not_swept", allowance.id, detail)
        session.expunge_all()
    report.add("reconcile_incomplete", "offline_allowances", "more rows than the batch bound")


def _escrow_moves(session: Session, allowance_ids: list[str]) -> dict[str, dict[str, int]]:
    """allowance id -> ledger kind -> sum of its escrow's entries of that kind."""
    rows = session.execute(
        select(Account.owner_id, LedgerTransaction.kind, func.sum(LedgerEntry.amount_minor))
        .join(LedgerEntry, LedgerEntry.account_id == Account.id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(Account.owner_kind == ESCROW, Account.owner_id.in_(allowance_ids))
        .group_by(Account.owner_id, LedgerTransaction.kind)
    ).all()
    moves: dict[str, dict[str, int]] = defaultdict(dict)
    for owner_id, kind, total in rows:
        moves[owner_id][kind] = int(total)
    return moves


def _paid_by_allowance(session: Session, allowance_ids: list[str]) -> dict[str, int]:
    rows = session.execute(
        select(Payment.allowance_id, func.sum(Payment.amount_minor))
        .where(Payment.allowance_id.in_(allowance_ids), Payment.status == PaymentStatus.SUCCEEDED)
        .group_by(Payment.allowance_id)
    ).all()
    return {str(allowance_id): int(total) for allowance_id, total in rows}


def _check_acceptances(
    session: Session, report: Findings, batch_rows: int, batches_max: int
) -> None:
    last: tuple[str, str] = ("", "")
    for _page in range(batches_max):
        page = session.scalars(
            select(OfflineAcceptance)
            .where(
                (OfflineAcceptance.terminal_id > last[0])
                | ((OfflineAcceptance.terminal_id == last[0]) & (OfflineAcceptance.id > last[1]))
            )
            .order_by(OfflineAcceptance.terminal_id, OfflineAcceptance.id)
            .limit(batch_rows)
        ).all()
        if not page:
            return
        last = (page[-1].terminal_id, page[-1].id)
        payments = _payments(session, [row.payment_id for row in page if row.payment_id])
        losses = _loss_credits(
            session, [row.loss_transaction_id for row in page if row.loss_transaction_id]
        )
        for row in page:
            problem = _acceptance_problem(row, payments, losses)
            if problem:
                report.add("acceptance_mismatch", f"{row.terminal_id}/{row.id}", problem)
        session.expunge_all()
    report.add("reconcile_incomplete", "offline_acceptances", "more rows than the batch bound")


def _payments(session: Session, ids: list[str]) -> dict[str, tuple[int, str, str | None, str]]:
    """payment id -> (amount, status, allowance id, merchant id)."""
    rows = session.execute(
        select(
            Payment.id,
            Payment.amount_minor,
            Payment.status,
            Payment.allowance_id,
            Payment.merchant_id,
        ).where(Payment.id.in_(ids))
    ).all()
    return {row[0]: (int(row[1]), row[2], row[3], row[4]) for row in rows}


def _loss_credits(session: Session, ids: list[str]) -> dict[str, tuple[str, str, int]]:
    """offline_loss transaction id -> (kind, credited loss account's merchant, amount)."""
    rows = session.execute(
        select(
            LedgerTransaction.id,
            LedgerTransaction.kind,
            Account.owner_id,
            LedgerEntry.amount_minor,
        )
        .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
        .join(Account, Account.id == LedgerEntry.account_id)
        .where(
            LedgerTransaction.id.in_(ids),
            Account.owner_kind == LOSS,
            LedgerEntry.amount_minor > 0,
        )
    ).all()
    return {row[0]: (row[1], row[2], int(row[3])) for row in rows}


def _acceptance_problem(
    row: OfflineAcceptance,
    payments: dict[str, tuple[int, str, str | None, str]],
    losses: dict[str, tuple[str, str, int]],
) -> str:
    """What does not match, in words; "" when everything does."""
    if row.result in NOTHING_MOVED:
        moved = row.paid_minor or row.loss_minor or row.payment_id or row.loss_transaction_id
        return f"a {row.result} moved money" if moved else ""
    if row.paid_minor + row.loss_minor != row.amount_minor:
        return f"paid {row.paid_minor} + loss {row.loss_minor} is not {row.amount_minor}"
    payment = payments.get(row.payment_id) if row.payment_id else None
    expected_payment = (row.paid_minor, PaymentStatus.SUCCEEDED, row.allowance_id, row.merchant_id)
    if (row.paid_minor > 0 or row.payment_id) and payment != expected_payment:
        return f"paid {row.paid_minor} from {row.allowance_id}, its payment is {payment}"
    loss = losses.get(row.loss_transaction_id) if row.loss_transaction_id else None
    if (row.loss_minor > 0 or row.loss_transaction_id) and loss != (
        LOSS_KIND,
        row.merchant_id,
        row.loss_minor,
    ):
        return f"loss {row.loss_minor} at {row.merchant_id}, its transaction is {loss}"
    return ""


def _check_losses(session: Session, report: Findings) -> None:
    """One aggregate per side: loss accounts are per merchant and currency, few."""
    booked = {
        (owner_id, currency): int(balance)
        for owner_id, currency, balance in session.execute(
            select(Account.owner_id, Account.currency, Account.balance_minor).where(
                Account.owner_kind == LOSS
            )
        )
    }
    accepted = {
        (merchant_id, currency): int(total)
        for merchant_id, currency, total in session.execute(
            select(
                OfflineAcceptance.merchant_id,
                OfflineAcceptance.currency,
                func.sum(OfflineAcceptance.loss_minor),
            )
            .group_by(OfflineAcceptance.merchant_id, OfflineAcceptance.currency)
            .having(func.sum(OfflineAcceptance.loss_minor) > 0)
        )
    }
    for key in sorted(set(booked) | set(accepted)):
        if booked.get(key, 0) != accepted.get(key, 0):
            detail = f"balance {booked.get(key, 0)}, acceptances lost {accepted.get(key, 0)}"
            report.add("loss_mismatch", f"loss:{key[0]}:{key[1]}", detail)


def _check_loss_orphans(session: Session, report: Findings) -> None:
    orphan = (
        select(LedgerTransaction.id)
        .outerjoin(OfflineAcceptance, OfflineAcceptance.loss_transaction_id == LedgerTransaction.id)
        .where(LedgerTransaction.kind == LOSS_KIND, OfflineAcceptance.id.is_(None))
        .order_by(LedgerTransaction.id)
        .limit(LISTED_MAX)
    )
    for transaction_id in session.scalars(orphan):
        report.add("transaction_orphan", transaction_id, "an offline_loss no acceptance names")
