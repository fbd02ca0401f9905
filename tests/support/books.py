"""The server's books as tests read them: account balances and the check that they add up
(every entry sums to zero and `reconcile` finds nothing), one copy for every test module."""

from __future__ import annotations

import time

from sqlalchemy import select

from paycode.server.books import ledger, reconcile
from paycode.server.database.models import Account
from paycode.server.testing import Server


def balances(server: Server) -> dict[tuple[str, str], int]:
    """(owner kind, owner id) -> balance of every account (the tests use one currency)."""
    with server.session() as session:
        rows = session.execute(
            select(Account.owner_kind, Account.owner_id, Account.balance_minor)
        ).all()
    return {(kind, owner): int(balance) for kind, owner, balance in rows}


def balance_minor(server: Server, owner_kind: str, owner_id: str, currency: str = "CNY") -> int:
    """One account's balance; 0 when it was never opened."""
    with server.session() as session:
        found = ledger.account(session, owner_kind, owner_id, currency)
        return 0 if found is None else found.balance_minor


def assert_books_clean(server: Server) -> None:
    """The ledger sums to zero and reconcile, with today's clock, finds no mismatch."""
    with server.session() as session:
        assert ledger.ledger_sum_minor(session) == 0
        report = reconcile.reconcile(session, now_s=time.time())
    assert report.mismatches == [], report.mismatches
    assert report.ok
