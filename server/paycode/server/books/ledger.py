"""Double-entry ledger: every movement is one transaction of entries summing to zero.

A debit is a conditional UPDATE (`balance_minor >= amount`), so a balance never goes below zero
even under concurrent charges; the CHECK constraint on accounts is the paired assertion.
Accounts are updated in ascending id order so two transfers over the same pair cannot deadlock.
"""

from __future__ import annotations

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.database.models import (
    SYSTEM,
    Account,
    LedgerEntry,
    LedgerTransaction,
    time_ordered_id,
)
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError


def account(session: Session, owner_kind: str, owner_id: str, currency: str) -> Account | None:
    return session.scalars(
        select(Account).where(
            Account.owner_kind == owner_kind,
            Account.owner_id == owner_id,
            Account.currency == currency,
        )
    ).one_or_none()


def open_account(session: Session, owner_kind: str, owner_id: str, currency: str) -> Account:
    """The owner's account in `currency`, created if missing (the UNIQUE constraint decides)."""
    existing = account(session, owner_kind, owner_id, currency)
    if existing is not None:
        return existing
    created = Account(owner_kind=owner_kind, owner_id=owner_id, currency=currency, balance_minor=0)
    try:
        with session.begin_nested():
            session.add(created)
    except IntegrityError:
        found = account(session, owner_kind, owner_id, currency)
        assert found is not None
        return found
    return created


def system_account(session: Session, currency: str) -> Account:
    return open_account(session, SYSTEM, "funding", currency)


def _move(session: Session, account_id: int, delta_minor: int) -> bool:
    statement = update(Account).where(Account.id == account_id)
    if delta_minor < 0:
        statement = statement.where(
            (Account.balance_minor >= -delta_minor) | (Account.owner_kind == SYSTEM)
        )
    result = session.execute(
        statement.values(balance_minor=Account.balance_minor + delta_minor),
        execution_options={"synchronize_session": False},
    )
    return result.rowcount == 1  # type: ignore[attr-defined, no-any-return]


def transfer(
    session: Session,
    *,
    kind: str,
    debit: Account,
    credit: Account,
    amount_minor: int,
    now_s: float,
    payment_id: str | None = None,
) -> str:
    """Move `amount_minor` from `debit` to `credit`; raises insufficient_funds, moves nothing."""
    assert amount_minor > 0 and debit.id != credit.id
    if debit.currency != credit.currency:
        raise ApiError(ErrorCode.CURRENCY_MISMATCH, "accounts hold different currencies")
    for account_id, delta in sorted([(debit.id, -amount_minor), (credit.id, amount_minor)]):
        if not _move(session, account_id, delta):
            raise ApiError(ErrorCode.INSUFFICIENT_FUNDS, "the balance does not cover the amount")
    transaction_id = time_ordered_id("txn", now_s)
    entries: list[dict[str, str | int]] = [
        {"transaction_id": transaction_id, "account_id": debit.id, "amount_minor": -amount_minor},
        {"transaction_id": transaction_id, "account_id": credit.id, "amount_minor": amount_minor},
    ]
    assert sum(int(entry["amount_minor"]) for entry in entries) == 0
    # Core inserts, in order: the transaction row must exist before its entries reference it.
    session.execute(
        insert(LedgerTransaction).values(
            id=transaction_id, kind=kind, payment_id=payment_id, created_at_s=now_s
        )
    )
    session.execute(insert(LedgerEntry).values(currency=debit.currency), entries)
    return transaction_id


def ledger_sum_minor(session: Session) -> int:
    """Sum of all entries: zero, always (asserted by tests and the reconciliation command)."""
    return int(session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0))) or 0)


def balance_minor(session: Session, account_id: int) -> int:
    value = session.scalar(select(Account.balance_minor).where(Account.id == account_id))
    assert value is not None
    return int(value)
