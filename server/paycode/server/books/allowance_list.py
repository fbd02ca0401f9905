"""A user's offline allowances as the wallet lists them (docs/offline.md §2.4): each one's state
and what its escrow did, read from the ledger itself, so the list never disagrees with it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from paycode.server.database.models import Account, LedgerEntry, LedgerTransaction
from paycode.server.database.offline_models import ESCROW, RETURN_KIND, OfflineAllowance

LISTED_MAX = 50
CHARGE = "charge"
"""A payment from escrow is an ordinary charge whose payer is the escrow (§2.2)."""


@dataclass(frozen=True, slots=True)
class AllowanceView:
    allowance_id: str
    state: str
    amount_minor: int
    currency: str
    expires_at_s: int
    returns_at_s: int
    settled_minor: int
    """Paid from escrow to merchants."""
    returned_minor: int
    """Moved back to the user (hand-back and sweep)."""
    held_minor: int
    """Still in escrow."""

    def as_json(self) -> dict[str, object]:
        return {
            "allowance_id": self.allowance_id,
            "state": self.state,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "expires_at_s": self.expires_at_s,
            "returns_at_s": self.returns_at_s,
            "settled_minor": self.settled_minor,
            "returned_minor": self.returned_minor,
            "held_minor": self.held_minor,
        }


def allowances_of(session: Session, user_id: str, limit: int = LISTED_MAX) -> list[AllowanceView]:
    """The user's newest `limit` (at most LISTED_MAX) allowances, newest first."""
    limit = max(1, min(limit, LISTED_MAX))
    allowances = session.scalars(
        select(OfflineAllowance)
        .where(OfflineAllowance.user_id == user_id)
        .order_by(OfflineAllowance.created_at_s.desc(), OfflineAllowance.id.desc())
        .limit(limit)
    ).all()
    if not allowances:
        return []
    escrows = {
        row.owner_id: row
        for row in session.execute(
            select(Account.id, Account.owner_id, Account.balance_minor).where(
                Account.owner_kind == ESCROW,
                Account.owner_id.in_([allowance.id for allowance in allowances]),
            )
        )
    }
    outflows = _outflows_minor(session, [row.id for row in escrows.values()])
    views = []
    for allowance in allowances:
        escrow = escrows.get(allowance.id)
        out = outflows.get(escrow.id, {}) if escrow is not None else {}
        views.append(
            AllowanceView(
                allowance.id,
                allowance.state,
                allowance.amount_minor,
                allowance.currency,
                int(allowance.expires_at_s),
                int(allowance.returns_at_s),
                settled_minor=out.get(CHARGE, 0),
                returned_minor=out.get(RETURN_KIND, 0),
                held_minor=int(escrow.balance_minor) if escrow is not None else 0,
            )
        )
    return views


def _outflows_minor(session: Session, account_ids: list[int]) -> dict[int, dict[str, int]]:
    """escrow account id -> transaction kind -> what left the account by it."""
    if not account_ids:
        return {}
    rows = session.execute(
        select(LedgerEntry.account_id, LedgerTransaction.kind, func.sum(LedgerEntry.amount_minor))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(LedgerEntry.account_id.in_(account_ids), LedgerEntry.amount_minor < 0)
        .group_by(LedgerEntry.account_id, LedgerTransaction.kind)
    ).all()
    found: dict[int, dict[str, int]] = defaultdict(dict)
    for account_id, kind, total in rows:
        found[int(account_id)][str(kind)] = -int(total)
    return found
