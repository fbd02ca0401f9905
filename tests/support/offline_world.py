"""The parts of tests/reliability/test_offline_property.py's world: real wallets and real tills
on one in-process server, and what the server's tables say about them (docs/offline.md §7, §8).

Everything here is the product's own code: wallets are `paycode.client` wallets enrolled over
the API, tills are a real offline log (`merchant_pos.offline_log`), a real keys copy fetched
with `offline_keys.fetch` and the real terminal client. The world only keeps what a test must
remember to state its invariants: who topped up what, which allowance was ever held by two
wallets, which codes each till acknowledged.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from paycode.client import pending
from paycode.client.wallet import Wallet
from paycode.merchant_pos import offline_keys
from paycode.merchant_pos.offline_keys import OfflineKeys
from paycode.merchant_pos.offline_log import OfflineLog, open_log
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.books import ledger
from paycode.server.database.models import (
    Account,
    Device,
    LedgerEntry,
    LedgerTransaction,
    Payment,
)
from paycode.server.database.offline_models import (
    CLAIMING_RESULTS,
    ESCROW,
    RETURN_KIND,
    OfflineAcceptance,
    OfflineAllowance,
)
from paycode.server.safety.offline_settings import CERTIFICATES_PER_ALLOWANCE, OfflineSettings
from paycode.server.testing import Server
from tests.support.shop import PASSWORD, Merchant, new_phone, new_user, user_id

PIN = "246810"


@dataclass
class Phone:
    """A wallet home: an enrolled phone, or a copy of one (the cloned-wallet attack)."""

    user: str
    user_id: str
    home: Path
    wallet: Wallet
    clone_of: int | None = None


@dataclass
class Till:
    """One terminal of a merchant, its line down when it sells: a real log kept open as the
    POS keeps it between sales, and the keys copy it fetched while online."""

    merchant: Merchant
    home: Path
    client: TerminalClient
    keys: OfflineKeys
    stack: ExitStack
    log: OfflineLog
    acknowledged: set[str] = field(default_factory=set)
    """Every code text this till showed PAID OFFLINE for."""


def open_till(merchant: Merchant, home: Path, *, local_now_s: float) -> Till:
    client = merchant.till
    keys = offline_keys.fetch(client, home, local_now_s=local_now_s)
    stack = ExitStack()
    log = stack.enter_context(open_log(home))
    return Till(merchant, home, client, keys, stack, log)


def reopen_log(till: Till, torn: bytes) -> int:
    """The till loses power and starts again: the log closed (its lock released), `torn` (a
    line cut part-way, as a power cut mid-write leaves it) appended, the log opened again.
    Returns the bytes the recovery cut off."""
    till.stack.close()
    if torn:
        with (till.log.path).open("ab") as handle:
            handle.write(torn)
    till.stack = ExitStack()
    till.log = till.stack.enter_context(open_log(till.home))
    return till.log.truncated_bytes


def enrolled_phone(server: Server, home: Path, top_up: str) -> Phone:
    """A fresh user with `top_up` CNY and a v3 wallet of theirs with the PIN set."""
    user = new_user(server, "offline", top_up=top_up)
    wallet = new_phone(server, home, user, ["v3"])
    pending.set_pin(wallet, password=PASSWORD, pin=PIN)
    return Phone(user, user_id(server, user), home, wallet)


def cloned_phone(phone: Phone, index: int, home: Path) -> Phone:
    """The keystore and its device secret copied to another home, as an attacker copies it."""
    shutil.copytree(phone.home, home)
    return Phone(phone.user, phone.user_id, home, Wallet.open(home), clone_of=index)


# -- what the server booked ----------------------------------------------------------------


def value_one_till_minor(settings: OfflineSettings, amount_minor: int, floor_minor: int) -> int:
    """V = min(T, n * min(p, F)) of one certificate of an allowance of `amount_minor`."""
    per_payment_minor, total_minor = settings.caps_minor(amount_minor)
    return min(total_minor, settings.count * min(per_payment_minor, floor_minor))


def loss_bound_minor(
    settings: OfflineSettings, amount_minor: int, floor_minor: int, tills: int
) -> int:
    """docs/offline.md §7 per allowance: c (k V - b), with b = 0 (the conservative bound)."""
    return (
        CERTIFICATES_PER_ALLOWANCE
        * tills
        * value_one_till_minor(settings, amount_minor, floor_minor)
    )


@dataclass(frozen=True)
class AllowanceBooks:
    allowance_id: str
    user_id: str
    amount_minor: int
    escrow_minor: int
    paid_minor: int
    """What merchants received from its escrow (offline acceptances and online v4 charges)."""
    returned_minor: int
    """What went back to its user (hand-back and sweep)."""
    loss_minor: int
    honest_loss_minor: int
    """Loss on results other than `late` (a till that synced after the sweep)."""
    offline_tills: int
    """k: the distinct tills whose offline acceptances name its certificates."""


def _books(session: Session, allowance: OfflineAllowance) -> AllowanceBooks:
    escrow = ledger.account(session, ESCROW, allowance.id, allowance.currency)
    assert escrow is not None, allowance.id
    rows = session.scalars(
        select(OfflineAcceptance).where(OfflineAcceptance.allowance_id == allowance.id)
    ).all()
    returned = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(LedgerEntry.account_id == escrow.id, LedgerTransaction.kind == RETURN_KIND)
    )
    return AllowanceBooks(
        allowance_id=allowance.id,
        user_id=allowance.user_id,
        amount_minor=allowance.amount_minor,
        escrow_minor=escrow.balance_minor,
        paid_minor=sum(row.paid_minor for row in rows),
        returned_minor=-int(returned or 0),
        loss_minor=sum(row.loss_minor for row in rows),
        honest_loss_minor=sum(row.loss_minor for row in rows if row.result != "late"),
        offline_tills=len({row.terminal_id for row in rows if row.seq is not None}),
    )


def allowance_books(server: Server, allowance_id: str) -> AllowanceBooks:
    with server.session() as session:
        allowance = session.get(OfflineAllowance, allowance_id)
        assert allowance is not None, allowance_id
        return _books(session, allowance)


@dataclass(frozen=True)
class UserBooks:
    user_id: str
    balance_minor: int
    allowances: list[AllowanceBooks]


def users_books(server: Server, user_ids: list[str]) -> list[UserBooks]:
    """Each user's balance and the books of every allowance they took, read in one session."""
    found: list[UserBooks] = []
    with server.session() as session:
        for uid in user_ids:
            account = ledger.account(session, "user", uid, "CNY")
            assert account is not None, uid
            allowances = session.scalars(
                select(OfflineAllowance)
                .where(OfflineAllowance.user_id == uid)
                .order_by(OfflineAllowance.created_at_s, OfflineAllowance.id)
            ).all()
            books = [_books(session, allowance) for allowance in allowances]
            found.append(UserBooks(uid, account.balance_minor, books))
    return found


def acceptance_row(server: Server, acceptance_id: str) -> OfflineAcceptance:
    """The server's row of one acceptance (a till's `acc_…`, or an online charge's payment)."""
    with server.session() as session:
        return session.scalars(
            select(OfflineAcceptance).where(OfflineAcceptance.id == acceptance_id)
        ).one()


def claims_twice(server: Server, merchant_ids: list[str]) -> list[tuple[str, str, str, int]]:
    """(merchant, cert, counter, count) claimed by more than one paying or losing acceptance."""
    with server.session() as session:
        rows = session.execute(
            select(
                OfflineAcceptance.merchant_id,
                OfflineAcceptance.cert_id,
                OfflineAcceptance.counter,
                func.count(),
            )
            .where(
                OfflineAcceptance.merchant_id.in_(merchant_ids),
                OfflineAcceptance.result.in_(CLAIMING_RESULTS),
            )
            .group_by(
                OfflineAcceptance.merchant_id, OfflineAcceptance.cert_id, OfflineAcceptance.counter
            )
            .having(func.count() > 1)
        ).all()
        return [(str(m), str(c), str(n), int(k)) for m, c, n, k in rows]


def payments_not_one_to_one(server: Server, allowance_ids: list[str]) -> list[str]:
    """Payments from these escrows that are not exactly one acceptance's payment, of its paid
    amount (a code paid twice would show as two payments of one acceptance or a stray one)."""
    wrong: list[str] = []
    with server.session() as session:
        payments = session.scalars(
            select(Payment).where(Payment.allowance_id.in_(allowance_ids))
        ).all()
        rows = session.scalars(
            select(OfflineAcceptance).where(
                OfflineAcceptance.allowance_id.in_(allowance_ids),
                OfflineAcceptance.payment_id.is_not(None),
            )
        ).all()
        by_payment: dict[str, list[OfflineAcceptance]] = {}
        for row in rows:
            by_payment.setdefault(str(row.payment_id), []).append(row)
        for payment in payments:
            claimed = by_payment.pop(payment.id, [])
            if len(claimed) != 1 or claimed[0].paid_minor != payment.amount_minor:
                wrong.append(f"{payment.id}: {len(claimed)} acceptances")
        wrong.extend(f"{pid}: no payment row" for pid in by_payment)
    return wrong


def device_revoked(server: Server, phone: Phone) -> bool:
    """Whether the server locked this phone's device (an over-spent allowance of it, 6.4)."""
    with server.session() as session:
        device = session.get(Device, phone.wallet.enrollment().device_id)
        return device is not None and device.revoked_at_s is not None


def escrow_accounts_negative(server: Server) -> int:
    with server.session() as session:
        return int(
            session.scalar(
                select(func.count()).where(Account.owner_kind == ESCROW, Account.balance_minor < 0)
            )
            or 0
        )
