"""What the ledger moved for a page of payments, in two aggregate queries (no entry row is
loaded): `reconcile` checks money payments and points redemptions against it alike."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from paycode.server.database.models import Account, LedgerEntry, LedgerTransaction

Side = tuple[str, str, str]
"""(owner_kind, owner_id, currency or asset) of an account."""
PaymentKind = tuple[str, str]
"""(payment id, ledger transaction kind)."""


def ledger_moves(
    session: Session, payment_ids: Sequence[str], kinds: Sequence[str]
) -> tuple[dict[PaymentKind, dict[Side, int]], dict[PaymentKind, int]]:
    """(payment, kind) -> side -> summed entries, and (payment, kind) -> transaction count,
    over the transactions of `kinds` that name one of `payment_ids`."""
    sides: dict[PaymentKind, dict[Side, int]] = defaultdict(dict)
    counts: dict[PaymentKind, int] = {}
    named = LedgerTransaction.payment_id.in_(payment_ids), LedgerTransaction.kind.in_(kinds)
    for payment_id, kind, count in session.execute(
        select(LedgerTransaction.payment_id, LedgerTransaction.kind, func.count())
        .where(*named)
        .group_by(LedgerTransaction.payment_id, LedgerTransaction.kind)
    ):
        counts[(str(payment_id), kind)] = int(count)
    side_columns = (Account.owner_kind, Account.owner_id, LedgerEntry.currency)
    for payment_id, kind, owner_kind, owner_id, currency, sum_minor in session.execute(
        select(
            LedgerTransaction.payment_id,
            LedgerTransaction.kind,
            *side_columns,
            func.sum(LedgerEntry.amount_minor),
        )
        .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
        .join(Account, Account.id == LedgerEntry.account_id)
        .where(*named)
        .group_by(LedgerTransaction.payment_id, LedgerTransaction.kind, *side_columns)
    ):
        sides[(str(payment_id), kind)][(owner_kind, owner_id, currency)] = int(sum_minor)
    return sides, counts
