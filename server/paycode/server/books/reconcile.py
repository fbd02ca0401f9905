"""Reconciliation: the whole ledger checked against itself and against payments and refunds.

Every check is an SQL aggregate over one bounded batch (keyset pages of accounts, ledger
transactions and payments), so no table is ever loaded whole, and the whole run reads one
consistent snapshot (`snapshot_session`), so live charges cannot make it see half a transfer.
Each mismatch names its subject and a stable code:

    ledger_not_zero             the entries of one currency do not sum to zero
    balance_mismatch            an account's balance_minor is not the sum of its entries
    entry_currency_mismatch     an entry's currency is not its account's
    transaction_unbalanced      a transaction's entries do not sum to zero, or are fewer than two
    transaction_mixed_currency  a transaction's entries hold more than one currency
    transaction_kind_unknown    a transaction is not a top_up, charge, refund or offline_* kind
    transaction_orphan          a charge or refund transaction names no payment, or an
                                offline_loss no acceptance names
    charge_missing              a succeeded payment has no charge transaction
    charge_duplicated           a succeeded payment has more than one
    charge_mismatch             its entries are not -amount from the payer (the user, or for an
                                offline payment its allowance's escrow), +amount to the merchant
    charge_without_success      a failed, pending, declined or cancelled payment moved money
    refund_mismatch             refund rows and refund transactions disagree (count or entries)
    refunded_mismatch           a payment's refunded_minor is not the sum of its refunds
    reconcile_incomplete        a table is larger than the batch bound: not everything was read
    escrow_mismatch, acceptance_mismatch, loss_mismatch, escrow_not_swept
                                offline payments (paycode.server.books.reconcile_offline)
    points_charge_mismatch, points_refund_mismatch, points_value_mismatch,
    mandate_usage_mismatch      points redemptions (paycode.server.books.reconcile_points);
                                a redemption's money `charge` is its amount less the points'
                                value, and none at all when the points paid it whole
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from paycode.server.books.ledger_moves import Side, ledger_moves
from paycode.server.books.reconcile_offline import check_offline
from paycode.server.books.reconcile_points import check_points
from paycode.server.database.engine import read_only
from paycode.server.database.models import Account, LedgerEntry, LedgerTransaction, Payment, Refund
from paycode.server.database.offline_models import ESCROW, FUND_KIND, LOSS_KIND, RETURN_KIND
from paycode.server.database.points_models import CHARGE_KIND as POINTS_CHARGE
from paycode.server.database.points_models import GRANT_KIND as POINTS_GRANT
from paycode.server.database.points_models import REFUND_KIND as POINTS_REFUND
from paycode.shared.codes import PaymentStatus

BATCH_ROWS: Final = 1000
BATCH_ROWS_MAX: Final = 10_000
BATCHES_MAX: Final = 100_000
"""Per table: at most 100,000 pages are read (10^8 rows at the default page size)."""
MISMATCHES_LISTED_MAX: Final = 50
"""Every mismatch is counted; the first 50 are named (bounded output)."""
KINDS: Final = (
    "top_up", "charge", "refund", FUND_KIND, RETURN_KIND, LOSS_KIND,
    POINTS_GRANT, POINTS_CHARGE, POINTS_REFUND,
)  # fmt: skip
CHARGE: Final = "charge"
REFUND: Final = "refund"


@dataclass(frozen=True, slots=True)
class Mismatch:
    code: str
    subject: str
    """What is wrong: a currency, `account:<id>`, a transaction id or a payment id."""
    detail: str


@dataclass
class Report:
    """Counts of what was read, and the mismatches (counted all, listed up to a bound)."""

    accounts: int = 0
    transactions: int = 0
    entries: int = 0
    payments: int = 0
    refunds: int = 0
    sums_minor: dict[str, int] = field(default_factory=dict)
    """Sum of all entries per currency: zero each, on a healthy ledger."""
    mismatch_count: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.mismatch_count == 0

    def add(self, code: str, subject: str, detail: str) -> None:
        self.mismatch_count += 1
        if len(self.mismatches) < MISMATCHES_LISTED_MAX:
            self.mismatches.append(Mismatch(code, subject, detail))


@contextmanager
def snapshot_session(engine: Engine) -> Iterator[Session]:
    """A read-only session on one consistent snapshot of the database: REPEATABLE READ on
    PostgreSQL; a deferred BEGIN on SQLite (a WAL reader keeps its snapshot), which never
    blocks writers. Nothing it reads can be half of a transfer committed meanwhile."""
    with read_only(engine) as connection:
        if engine.dialect.name == "postgresql":
            connection.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        with Session(bind=connection) as session, session.begin():
            yield session


def reconcile(
    session: Session,
    *,
    batch_rows: int = BATCH_ROWS,
    batches_max: int = BATCHES_MAX,
    now_s: float | None = None,
) -> Report:
    """Run every check; the report says what was read and what does not add up. `now_s`
    (the clock of the run) enables the one check that depends on time, escrow_not_swept."""
    assert 1 <= batch_rows <= BATCH_ROWS_MAX and batches_max >= 1
    report = Report()
    _check_currency_sums(session, report)
    _check_accounts(session, report, batch_rows, batches_max)
    _check_transactions(session, report, batch_rows, batches_max)
    _check_orphans(session, report)
    _check_payments(session, report, batch_rows, batches_max)
    check_offline(session, report, batch_rows=batch_rows, batches_max=batches_max, now_s=now_s)
    check_points(session, report, batch_rows=batch_rows, batches_max=batches_max)
    return report


# -- the ledger on its own ------------------------------------------------------------------


def _check_currency_sums(session: Session, report: Report) -> None:
    rows = session.execute(
        select(LedgerEntry.currency, func.sum(LedgerEntry.amount_minor), func.count())
        .group_by(LedgerEntry.currency)
        .order_by(LedgerEntry.currency)
    ).all()
    for currency, sum_minor, count in rows:
        report.sums_minor[currency] = int(sum_minor)
        report.entries += int(count)
        if int(sum_minor) != 0:
            report.add("ledger_not_zero", currency, f"the {currency} entries sum to {sum_minor}")


def _check_accounts(session: Session, report: Report, batch_rows: int, batches_max: int) -> None:
    """Per page of accounts: the sum of each one's entries (per currency) against its balance."""
    last_id = 0
    for _page in range(batches_max):
        accounts = session.execute(
            select(Account.id, Account.balance_minor, Account.currency)
            .where(Account.id > last_id)
            .order_by(Account.id)
            .limit(batch_rows)
        ).all()
        if not accounts:
            return
        last_id = accounts[-1].id
        report.accounts += len(accounts)
        sums = _entry_sums(session, [row.id for row in accounts])
        for account_id, balance_minor, currency in accounts:
            by_currency = sums.get(account_id, {})
            total_minor = sum(by_currency.values())
            if total_minor != balance_minor:
                report.add(
                    "balance_mismatch",
                    f"account:{account_id}",
                    f"balance {balance_minor} {currency}, entries sum to {total_minor}",
                )
            for other in sorted(set(by_currency) - {currency}):
                report.add(
                    "entry_currency_mismatch",
                    f"account:{account_id}",
                    f"a {currency} account has {other} entries",
                )
    _incomplete(report, "accounts")


def _entry_sums(session: Session, account_ids: list[int]) -> dict[int, dict[str, int]]:
    rows = session.execute(
        select(LedgerEntry.account_id, LedgerEntry.currency, func.sum(LedgerEntry.amount_minor))
        .where(LedgerEntry.account_id.in_(account_ids))
        .group_by(LedgerEntry.account_id, LedgerEntry.currency)
    ).all()
    sums: dict[int, dict[str, int]] = defaultdict(dict)
    for account_id, currency, sum_minor in rows:
        sums[account_id][currency] = int(sum_minor)
    return sums


def _check_transactions(
    session: Session, report: Report, batch_rows: int, batches_max: int
) -> None:
    """Per page of transactions: each sums to zero, in one currency, with two entries or more."""
    last_id = ""
    for _page in range(batches_max):
        page = session.execute(
            select(LedgerTransaction.id, LedgerTransaction.kind)
            .where(LedgerTransaction.id > last_id)
            .order_by(LedgerTransaction.id)
            .limit(batch_rows)
        ).all()
        if not page:
            return
        last_id = page[-1].id
        report.transactions += len(page)
        shapes = _transaction_shapes(session, [row.id for row in page])
        for transaction_id, kind in page:
            _check_transaction(report, transaction_id, kind, shapes.get(transaction_id, {}))
    _incomplete(report, "ledger_transactions")


def _transaction_shapes(
    session: Session, transaction_ids: list[str]
) -> dict[str, dict[str, tuple[int, int]]]:
    """transaction id -> currency -> (entry count, sum)."""
    rows = session.execute(
        select(
            LedgerEntry.transaction_id,
            LedgerEntry.currency,
            func.count(),
            func.sum(LedgerEntry.amount_minor),
        )
        .where(LedgerEntry.transaction_id.in_(transaction_ids))
        .group_by(LedgerEntry.transaction_id, LedgerEntry.currency)
    ).all()
    shapes: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    for transaction_id, currency, count, sum_minor in rows:
        shapes[transaction_id][currency] = (int(count), int(sum_minor))
    return shapes


def _check_transaction(
    report: Report, transaction_id: str, kind: str, shape: dict[str, tuple[int, int]]
) -> None:
    if kind not in KINDS:
        report.add("transaction_kind_unknown", transaction_id, f"unknown kind {kind[:16]!r}")
    count = sum(entries for entries, _ in shape.values())
    sum_minor = sum(total for _, total in shape.values())
    if count < 2 or sum_minor != 0:
        detail = f"{count} entries summing to {sum_minor}"
        report.add("transaction_unbalanced", transaction_id, detail)
    if len(shape) > 1:
        currencies = ", ".join(sorted(shape))
        report.add("transaction_mixed_currency", transaction_id, f"entries in {currencies}")


def _check_orphans(session: Session, report: Report) -> None:
    """Charge and refund transactions must name an existing payment."""
    orphan = (
        select(LedgerTransaction.id)
        .outerjoin(Payment, Payment.id == LedgerTransaction.payment_id)
        .where(LedgerTransaction.kind.in_((CHARGE, REFUND)), Payment.id.is_(None))
        .order_by(LedgerTransaction.id)
    )
    count = int(session.scalar(select(func.count()).select_from(orphan.subquery())) or 0)
    for transaction_id in session.scalars(orphan.limit(MISMATCHES_LISTED_MAX)):
        report.add("transaction_orphan", transaction_id, "names no existing payment")
    report.mismatch_count += max(0, count - MISMATCHES_LISTED_MAX)


def _incomplete(report: Report, table: str) -> None:
    report.add("reconcile_incomplete", table, "more rows than the batch bound: not all read")


# -- payments and refunds against the ledger ------------------------------------------------


@dataclass
class _Moved:
    """What the ledger holds for one payment: transactions per kind, sums per kind and side."""

    transactions: dict[str, int] = field(default_factory=dict)
    sides: dict[str, dict[Side, int]] = field(default_factory=lambda: defaultdict(dict))
    refund_count: int = 0
    refund_sum_minor: int = 0


def _check_payments(session: Session, report: Report, batch_rows: int, batches_max: int) -> None:
    last_id = ""
    for _page in range(batches_max):
        page = session.scalars(
            select(Payment).where(Payment.id > last_id).order_by(Payment.id).limit(batch_rows)
        ).all()
        if not page:
            return
        last_id = page[-1].id
        report.payments += len(page)
        moved = _moved(session, [payment.id for payment in page])
        for payment in page:
            found = moved.get(payment.id, _Moved())
            report.refunds += found.refund_count
            _check_charge(report, payment, found)
            _check_refunds(report, payment, found)
        session.expunge_all()  # keep the identity map to one page
    _incomplete(report, "payments")


def _moved(session: Session, payment_ids: list[str]) -> dict[str, _Moved]:
    """Three aggregates for one page of payments: no row per refund is ever loaded."""
    moved: dict[str, _Moved] = defaultdict(_Moved)
    sides, counts = ledger_moves(session, payment_ids, (CHARGE, REFUND))
    for (payment_id, kind), count in counts.items():
        moved[payment_id].transactions[kind] = count
    for (payment_id, kind), by_side in sides.items():
        moved[payment_id].sides[kind] = by_side
    for payment_id, count, sum_minor in session.execute(
        select(Refund.payment_id, func.count(), func.sum(Refund.amount_minor))
        .where(Refund.payment_id.in_(payment_ids))
        .group_by(Refund.payment_id)
    ):
        moved[payment_id].refund_count = int(count)
        moved[payment_id].refund_sum_minor = int(sum_minor)
    return moved


def _transfer(payment: Payment, from_kind: str, amount_minor: int) -> dict[Side, int]:
    """The sides a transfer of `amount_minor` between the payment's payer and merchant has.

    An offline payment is charged to its allowance's escrow and refunded to the user."""
    if amount_minor == 0:
        return {}
    user: Side = ("user", payment.user_id or "", payment.currency)
    if payment.allowance_id is not None and from_kind == "user":
        user = (ESCROW, payment.allowance_id, payment.currency)
    merchant: Side = ("merchant", payment.merchant_id, payment.currency)
    payer, payee = (user, merchant) if from_kind == "user" else (merchant, user)
    return {payer: -amount_minor, payee: amount_minor}


def _check_charge(report: Report, payment: Payment, moved: _Moved) -> None:
    charges = moved.transactions.get(CHARGE, 0)
    if payment.status != PaymentStatus.SUCCEEDED:
        if charges:
            detail = f"a {payment.status} payment has {charges} charge transaction(s)"
            report.add("charge_without_success", payment.id, detail)
        return
    money_minor = payment.amount_minor - payment.points_value_minor  # points paid the rest
    if charges == 0:
        if money_minor != 0:
            detail = "a succeeded payment has no charge transaction"
            report.add("charge_missing", payment.id, detail)
        return
    if charges > 1:
        report.add("charge_duplicated", payment.id, f"{charges} charge transactions")
        return
    expected = _transfer(payment, "user", money_minor)
    found = dict(moved.sides.get(CHARGE, {}))
    if found != expected:
        detail = f"entries {_sides_text(found)}, expected {_sides_text(expected)}"
        report.add("charge_mismatch", payment.id, detail)


def _check_refunds(report: Report, payment: Payment, moved: _Moved) -> None:
    if payment.refunded_minor != moved.refund_sum_minor:
        detail = f"refunded_minor {payment.refunded_minor}, refunds sum to {moved.refund_sum_minor}"
        report.add("refunded_mismatch", payment.id, detail)
    transactions = moved.transactions.get(REFUND, 0)
    if transactions != moved.refund_count:
        detail = f"{moved.refund_count} refund(s), {transactions} refund transaction(s)"
        report.add("refund_mismatch", payment.id, detail)
        return
    if moved.refund_count and payment.status != PaymentStatus.SUCCEEDED:
        report.add("refund_mismatch", payment.id, f"a {payment.status} payment has refunds")
    expected = _transfer(payment, "merchant", moved.refund_sum_minor)
    found = dict(moved.sides.get(REFUND, {}))
    if found != expected:
        detail = f"entries {_sides_text(found)}, expected {_sides_text(expected)}"
        report.add("refund_mismatch", payment.id, detail)


def _sides_text(sides: dict[Side, int]) -> str:
    if not sides:
        return "none"
    return ", ".join(
        f"{kind}:{owner} {amount:+d} {currency}"
        for (kind, owner, currency), amount in sorted(sides.items())
    )


def report_json(report: Report) -> dict[str, Any]:
    return {
        "summary": {
            "accounts": report.accounts,
            "transactions": report.transactions,
            "entries": report.entries,
            "payments": report.payments,
            "refunds": report.refunds,
            "sums_minor": report.sums_minor,
            "mismatch_count": report.mismatch_count,
        },
        "mismatches": [
            {"code": item.code, "subject": item.subject, "detail": item.detail}
            for item in report.mismatches
        ],
    }
