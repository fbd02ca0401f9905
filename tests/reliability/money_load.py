"""Money under load, for the bank-invariant (test_bank.py) and crash (test_crashes.py) tests.

A `MoneyLoad` on a live server, made by the one shop builder (tests/support/shop.py): users topped
up and limited in-process (what `paycode-server users top-up | limits` run) with wallets
enrolled over HTTP by the real wallet library, merchants with a terminal each. Client
threads (`run_clients`) do seeded random operations: charges of fresh wallet codes of random
versions through the real TerminalClient (each with its own Idempotency-Key and
merchant_order_id), partial and full refunds of earlier payments, and operator top-ups
(server.admin.top_up in-process). The `Book` keeps what every client saw:

    acked      the server answered 2xx: the operation happened, exactly as the answer says
    refused    the server answered a 4xx problem (stored under the key): nothing moved
    in doubt   the call errored (network error or timeout after the client's own retries, a
               5xx, or a 409 idempotency_in_progress): it may or may not have happened

`check_snapshot` reads one consistent snapshot (REPEATABLE READ on PostgreSQL, a deferred
BEGIN on SQLite in WAL mode) and checks what holds at every instant, whatever runs meanwhile:
the ledger sums to zero, each balance is the sum of its entries, nothing but the system
account is negative, the system account is minus the top-ups and minus everyone else, each
succeeded payment has one charge transaction, refunds add up, an order has at most one
payment, no payment exists that no client asked for; and against the clients' knowledge:
every payment and refund acknowledged before the snapshot began is in it with its amount,
and the top-ups in it lie between those acknowledged before it began and those started
before its first read returned. `settle_and_reconcile` then, once the load is over, checks
the in-doubt calls against the database, resolves them by re-sending each with its own key,
and requires an exact match between the books and the database.

Reproducibility: every client thread draws its operations (kind, customer, merchant, code
version, amount, idempotency key) from its own RNG derived from the test's seed, so a seed
replays the same per-thread operation sequences. The interleaving of threads, and so which
charges meet an empty balance or which payment a refund picks among those acknowledged so
far, depends on timing and cannot be replayed exactly.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, or_, select, update
from sqlalchemy.orm import Session

from bench.load import worker_pids
from paycode.client.wallet import Wallet
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.server.database.engine import READ_ONLY_OPTION, make_engine
from paycode.server.database.models import (
    SYSTEM,
    Account,
    LedgerEntry,
    LedgerTransaction,
    Payment,
    Refund,
)
from paycode.server.operations import admin
from paycode.shared.errors import CounterExhausted, ServerRejected, ServerUnreachable
from tests.support.servers import LiveServer
from tests.support.shop import Merchant, new_merchant, new_phone, new_users, set_limits, user_id

CURRENCY = "CNY"
DAILY_MAX = "10000000.00"
"""Customers' password-free daily total: never what stops a charge here."""
VERSIONS = ("v1", "v2", "v3")
CHARGE_MINOR_MAX = 3000
"""Charges of 0.01-30.00: with START and TOP_UP below, customers run dry now and then."""
START_MINOR = (5000, 20000)
TOP_UP_MINOR = (2000, 12000)
REFUND_FULL_SHARE = 0.3
WEIGHTS = {"charge": 70, "refund": 15, "top_up": 15}
CLIENT_TIMEOUT_S = 10.0
OUTAGE_WAIT_S = 60.0
"""How long a client waits for the server to come back before leaving a call in doubt."""
SNAPSHOT_PAUSE_S = 0.2
ANSWERED_REFUSALS = {
    "charge": {"insufficient_funds"},
    "refund": {"refund_exceeds_payment"},
}
"""The refusals a correct server gives this workload; any other refusal is an anomaly."""
RESCAN_REFUSALS = {"code_replayed", "code_expired"}
"""A code re-scanned under a new key after its charge: never paid a second time."""


def money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def derived_rng(seed: int, *parts: object) -> random.Random:
    """A reproducible RNG for one thread or purpose of a seeded run."""
    return random.Random(f"{seed}:" + ":".join(str(part) for part in parts))


# -- the bank -----------------------------------------------------------------------------------


@dataclass
class Customer:
    name: str
    user_id: str
    wallet: Wallet
    lock: threading.Lock = field(default_factory=threading.Lock)
    """A Wallet is not thread-safe: one code at a time."""

    def next_code(self, version: str) -> tuple[str, str]:
        """(code, version): a fresh code of `version`, or of the next version when this step's
        v1 counters (ten per 30 s) are used up."""
        order = [version, *(v for v in VERSIONS if v != version)]
        with self.lock:
            for candidate in order:
                try:
                    return self.wallet.next_code(candidate, local_now_s=time.time()).text, candidate
                except CounterExhausted:
                    continue
        raise AssertionError("every version's counters are used up")


@dataclass(eq=False)
class Op:
    """One client operation and what its client learned."""

    kind: str
    """"charge", "refund" or "top_up"."""
    key: str
    """Its Idempotency-Key, the same on every retry ("" for a top-up)."""
    customer: int
    merchant: int
    amount_minor: int
    order_id: str = ""
    code: str = ""
    version: str = ""
    payment_id: str = ""
    """A charge's payment once acknowledged; a refund's target payment."""
    refund_id: str = ""
    rescan_of: Op | None = field(default=None, repr=False)
    """A re-scan: the same code as this earlier charge, under a new key and order id."""
    state: str = "sent"
    """"sent", then "acked", "refused" or "in_doubt"."""
    refusal: str = ""
    errors: list[str] = field(default_factory=list)
    """Every error its calls met, in order: an op that has any was in doubt for a while."""
    patient: bool = False
    """After an error, wait for the server and send it again (see MoneyLoad.patience)."""
    resolved: str = ""
    """How an in-doubt op was settled after the load: "resent" (its own key again)."""


class Book:
    """What the clients know, shared by every thread (one lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops: list[Op] = []
        self.paid: list[Op] = []
        """Acknowledged charges, in acknowledgement order (refunds pick among them)."""
        self.refunded_acked: dict[str, int] = defaultdict(int)
        self.refunds_acked: list[Op] = []
        self.top_up_acked_minor = 0
        self.top_up_started_minor = 0
        self.orders: set[str] = set()
        self.notes: list[str] = []
        self.retries = 0
        """TerminalClient back-off sleeps: a call retried after an error or a 5xx."""
        self.outage_waits = 0
        """Calls that waited for the server to come back and were sent again (same key)."""

    def anomaly(self, note: str) -> None:
        with self.lock:
            self.notes.append(note)

    def start(self, op: Op) -> None:
        with self.lock:
            self.ops.append(op)
            if op.kind == "top_up":
                self.top_up_started_minor += op.amount_minor
            if op.order_id:
                self.orders.add(op.order_id)

    def acked(self, op: Op) -> None:
        with self.lock:
            op.state = "acked"
            if op.kind == "charge":
                self.paid.append(op)
            elif op.kind == "refund":
                self.refunded_acked[op.payment_id] += op.amount_minor
                self.refunds_acked.append(op)
            else:
                self.top_up_acked_minor += op.amount_minor

    def refused(self, op: Op, code: str) -> None:
        with self.lock:
            op.state, op.refusal = "refused", code

    def in_doubt(self, op: Op) -> None:
        with self.lock:
            op.state = "in_doubt"

    def counted_sleep(self, seconds: float) -> None:
        with self.lock:
            self.retries += 1
        time.sleep(seconds)

    def view(self) -> KnownBefore:
        """What was acknowledged so far (take it before a snapshot begins)."""
        with self.lock:
            return KnownBefore(
                payments=[(op.payment_id, op.amount_minor, op.order_id) for op in self.paid],
                refunds=[
                    (op.refund_id, op.payment_id, op.amount_minor) for op in self.refunds_acked
                ],
                top_up_acked_minor=self.top_up_acked_minor,
            )

    def started_top_up_minor(self) -> int:
        with self.lock:
            return self.top_up_started_minor

    def known_orders(self) -> set[str]:
        with self.lock:
            return set(self.orders)

    def counts(self) -> dict[str, object]:
        with self.lock:
            ops = list(self.ops)
        by: Counter[str] = Counter()
        refusals: Counter[str] = Counter()
        versions: Counter[str] = Counter()
        for op in ops:
            by[f"{op.kind}s_{op.state}"] += 1
            if op.errors:
                by["ops_that_errored"] += 1
            if op.refusal:
                refusals[f"{op.kind}:{op.refusal}"] += 1
            if op.kind == "charge" and op.rescan_of is None:
                versions[op.version] += 1
            if op.rescan_of is not None:
                by[f"re-scans_{op.state}"] += 1
        return {
            **dict(sorted(by.items())),
            "refusals": ", ".join(f"{k} {v}" for k, v in sorted(refusals.items())) or "none",
            "code versions": ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
            "client retries (same key)": self.retries,
            "sent again after an outage (same key)": self.outage_waits,
        }


@dataclass(frozen=True)
class KnownBefore:
    payments: list[tuple[str, int, str]]
    """(payment id, amount, order id) of every charge acknowledged 201."""
    refunds: list[tuple[str, str, int]]
    """(refund id, payment id, amount) of every refund acknowledged 201."""
    top_up_acked_minor: int


@dataclass
class MoneyLoad:
    """One run of the money load: its customers and merchants (made by the one shop builder),
    the book of every acknowledged operation, and how the run treats faults and outages."""

    server: LiveServer
    engine: Engine
    """The test's own engine on the server's database (top-ups, snapshots)."""
    customers: list[Customer]
    merchants: list[Merchant]
    book: Book
    up: threading.Event = field(default_factory=threading.Event)
    """Set while the server serves; a whole-server crash clears it until the restart."""
    faults: bool = False
    """Faults are injected: a 5xx answer is then no anomaly in itself (the call is in doubt)."""
    patience: float = 0.0
    """Crash tests: the share of calls (drawn per call) that, after erroring, wait for the
    server and are sent again with the same key; the others stay in doubt until the end."""

    @property
    def url(self) -> str:
        return self.server.url

    def till(self, merchant: int) -> TerminalClient:
        """The real terminal client, on the server's current address, its back-off counted."""
        return self.merchants[merchant].till_at(
            self.url, timeout_s=CLIENT_TIMEOUT_S, sleep=self.book.counted_sleep
        )


def open_money_load(
    server: LiveServer, home: Path, rng: random.Random, users: int, merchants: int
) -> MoneyLoad:
    """`users` customers (each topped up once, password-free limits lifted: this races money,
    not limits) with a wallet enrolled in v1, v2 and v3; `merchants` with a terminal each.
    Made by the one shop builder (tests/support/shop.py), wallets enrolled over HTTP."""
    engine = make_engine(server.database_url)
    book = Book()
    made = [new_merchant(server, "RelShop") for _ in range(merchants)]
    starts = [Op("top_up", "", index, -1, rng.randint(*START_MINOR)) for index in range(users)]
    names = new_users(server, "rel", [money(start.amount_minor) for start in starts])
    for name in names:
        set_limits(server, name, daily_max=DAILY_MAX)

    def customer(name: str) -> Customer:
        wallet = new_phone(server, home / name, name, list(VERSIONS))
        return Customer(name, user_id(server, name), wallet)

    with ThreadPoolExecutor(max_workers=4) as pool:
        customers = list(pool.map(customer, names))
    for start in starts:
        book.start(start)
        book.acked(start)
    bank = MoneyLoad(server, engine, customers, made, book)
    bank.up.set()
    return bank


# -- operations ---------------------------------------------------------------------------------


def _answer(bank: MoneyLoad, op: Op, call: Callable[[TerminalClient], dict[str, Any]]) -> None:
    """Send `op` with the real TerminalClient (its own retries, same key); a refusal or a
    reply settles it; an error leaves it in doubt, or, in a crash test, waits for the server
    and sends it again with the same key, until OUTAGE_WAIT_S has passed."""
    deadline = time.monotonic() + OUTAGE_WAIT_S
    while True:
        try:
            reply = call(bank.till(op.merchant))
        except ServerRejected as error:
            if error.status < 500 and error.code != "idempotency_in_progress":
                bank.book.refused(op, error.code)
                _check_refusal(bank, op)
                return
            op.errors.append(f"{error.status} {error.code}")
            if error.status >= 500 and not bank.faults:
                bank.book.anomaly(f"{op.kind} {op.order_id}: {error.status} {error.code}, no fault")
        except ServerUnreachable as error:
            op.errors.append(f"unreachable: {str(error)[-60:]}")
        else:
            _check_reply(bank, op, reply)
            return
        left_s = deadline - time.monotonic()
        if not op.patient or left_s <= 0 or not bank.up.wait(left_s):
            bank.book.in_doubt(op)
            return
        with bank.book.lock:
            bank.book.outage_waits += 1


def _check_reply(bank: MoneyLoad, op: Op, reply: dict[str, Any]) -> None:
    merchant = bank.merchants[op.merchant]
    if op.kind == "charge":
        op.payment_id = str(reply.get("payment_id", ""))
        expected = ("succeeded", op.amount_minor, op.order_id, merchant.merchant_id, op.version)
        found = (
            reply.get("status"),
            reply.get("amount_minor"),
            reply.get("merchant_order_id"),
            reply.get("merchant_id"),
            reply.get("code_version"),
        )
        if found != expected or not op.payment_id:
            bank.book.anomaly(f"charge {op.order_id}: answered {found}, expected {expected}")
        if op.rescan_of is not None:
            bank.book.anomaly(
                f"a code paid twice: {op.order_id} re-scanned the code of "
                f"{op.rescan_of.order_id} under a new key and was answered {reply.get('status')}"
            )
    else:
        op.refund_id = str(reply.get("refund_id", ""))
        payment = reply.get("payment") or {}
        found_refund = (reply.get("amount"), payment.get("payment_id"))
        if found_refund != (money(op.amount_minor), op.payment_id) or not op.refund_id:
            bank.book.anomaly(f"refund of {op.payment_id}: answered {found_refund}")
    bank.book.acked(op)


def _check_refusal(bank: MoneyLoad, op: Op) -> None:
    allowed = RESCAN_REFUSALS if op.rescan_of is not None else ANSWERED_REFUSALS[op.kind]
    if op.resolved and op.kind == "charge":
        allowed = {*allowed, "code_expired"}  # sent again after the load: it may be too old
    if op.refusal not in allowed:
        bank.book.anomaly(f"{op.kind} {op.order_id or op.payment_id}: refused {op.refusal}")


def charge(bank: MoneyLoad, rng: random.Random, order_id: str) -> Op:
    customer = rng.randrange(len(bank.customers))
    wanted = rng.choice(VERSIONS)
    op = Op(
        "charge",
        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        customer,
        rng.randrange(len(bank.merchants)),
        rng.randint(1, CHARGE_MINOR_MAX),
        order_id=order_id,
        patient=rng.random() < bank.patience,
    )
    op.code, op.version = bank.customers[customer].next_code(wanted)
    send_charge(bank, op)
    return op


def send_charge(bank: MoneyLoad, op: Op, *, again: bool = False) -> None:
    """Send a charge; `again`: an op already in the book, re-sent with its own key."""
    if not again:
        bank.book.start(op)
    _answer(
        bank,
        op,
        lambda till: till.charge(
            code=op.code,
            amount=money(op.amount_minor),
            currency=CURRENCY,
            merchant_order_id=op.order_id,
            idempotency_key=op.key,
        ),
    )


def rescan(bank: MoneyLoad, rng: random.Random, earlier: Op, order_id: str) -> Op:
    """The cashier scans the same code again as a new sale (new key, new order id)."""
    op = Op(
        "charge",
        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        earlier.customer,
        earlier.merchant,
        earlier.amount_minor,
        order_id=order_id,
        code=earlier.code,
        version=earlier.version,
        rescan_of=earlier,
        patient=rng.random() < bank.patience,
    )
    send_charge(bank, op)
    return op


def refund(bank: MoneyLoad, rng: random.Random) -> Op | None:
    """A partial or full refund of a random acknowledged payment (None: none yet)."""
    with bank.book.lock:
        if not bank.book.paid:
            return None
        target = bank.book.paid[rng.randrange(len(bank.book.paid))]
        left = target.amount_minor - bank.book.refunded_acked[target.payment_id]
    full = rng.random() < REFUND_FULL_SHARE and left > 0
    amount = left if full else rng.randint(1, max(1, target.amount_minor // 2))
    op = Op(
        "refund",
        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        target.customer,
        target.merchant,
        amount,
        payment_id=target.payment_id,
        patient=rng.random() < bank.patience,
    )
    send_refund(bank, op)
    return op


def send_refund(bank: MoneyLoad, op: Op, *, again: bool = False) -> None:
    if not again:
        bank.book.start(op)
    _answer(
        bank,
        op,
        lambda till: till.refund(
            op.payment_id, amount=money(op.amount_minor), idempotency_key=op.key
        ),
    )


def top_up(bank: MoneyLoad, rng: random.Random) -> Op:
    """What `paycode-server users top-up` runs, in-process, committed here."""
    op = Op("top_up", "", rng.randrange(len(bank.customers)), -1, rng.randint(*TOP_UP_MINOR))
    bank.book.start(op)
    name = bank.customers[op.customer].name
    try:
        with Session(bank.engine) as session:
            admin.top_up(session, name, money(op.amount_minor), time.time(), CURRENCY)
            session.commit()
    except Exception as error:  # any failure leaves the top-up in doubt
        op.errors.append(repr(error)[:100])
        bank.book.in_doubt(op)
    else:
        bank.book.acked(op)
    return op


def client_loop(
    bank: MoneyLoad,
    rng: random.Random,
    thread: int,
    stop: threading.Event,
    *,
    rescan_share: float = 0.0,
) -> None:
    """Random operations until `stop`; with `rescan_share`, a charge that was in doubt for a
    while is then re-scanned (same code, new key) that often."""
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    for serial in itertools.count():
        if stop.is_set():
            return
        kind = rng.choices(kinds, weights)[0]
        if kind == "refund" and refund(bank, rng) is not None:
            continue
        if kind == "top_up":
            top_up(bank, rng)
            continue
        op = charge(bank, rng, f"t{thread}-{serial}")
        if op.errors and op.state != "in_doubt" and rng.random() < rescan_share:
            rescan(bank, rng, op, f"t{thread}-{serial}-again")


def run_clients(
    bank: MoneyLoad,
    seed: int,
    threads: int,
    stop: threading.Event,
    *,
    rescan_share: float = 0.0,
) -> list[threading.Thread]:
    """Start `threads` client threads, each with its own RNG derived from `seed`."""
    started = []
    for index in range(threads):
        rng = derived_rng(seed, "client", index)
        thread = threading.Thread(
            target=_guarded(bank, client_loop),
            args=(bank, rng, index, stop),
            kwargs={"rescan_share": rescan_share},
            name=f"client-{index}",
            daemon=True,
        )
        thread.start()
        started.append(thread)
    return started


def _guarded(bank: MoneyLoad, target: Callable[..., None]) -> Callable[..., None]:
    """A client thread that dies of an unexpected exception is an anomaly, not a silent hole."""

    def run(*args: Any, **kwargs: Any) -> None:
        try:
            target(*args, **kwargs)
        except Exception as error:  # whatever it was, on the record
            bank.book.anomaly(f"{threading.current_thread().name} crashed: {error!r}"[:300])

    return run


# -- snapshots ----------------------------------------------------------------------------------


@contextlib.contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """One consistent, read-only snapshot: REPEATABLE READ on PostgreSQL (taken at the first
    statement); on SQLite a deferred BEGIN (server.db's read-only option), whose first read
    fixes a WAL snapshot that later commits do not change."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            options: dict[str, Any] = {
                "isolation_level": "REPEATABLE READ",
                "postgresql_readonly": True,
            }
        else:
            options = {READ_ONLY_OPTION: True}
        reader = connection.execution_options(**options)
        with reader.begin():
            yield reader


@dataclass
class Snapshot:
    balances: dict[tuple[str, str], int]
    """(owner kind, owner id) -> balance."""
    payments: dict[str, tuple[str, int, int, str, str | None, str | None, str | None]]
    """id -> (status, amount, refunded, merchant id, user id, order id, failure code)."""
    refunds: dict[str, tuple[str, int]]
    """refund id -> (payment id, amount)."""
    top_ups_minor: int


def check_snapshot(bank: MoneyLoad, notes: list[str]) -> Snapshot:
    """Read one snapshot, append every invariant it breaks to `notes`, and return it."""
    book = bank.book
    before = book.view()  # acknowledged before the snapshot begins: all must be in it
    with snapshot(bank.engine) as db:
        accounts = db.execute(
            select(Account.id, Account.owner_kind, Account.owner_id, Account.balance_minor)
        ).all()
        started_top_up_minor = book.started_top_up_minor()  # after the snapshot was taken
        known_orders = book.known_orders()
        entry_sums = {
            account_id: int(total)
            for account_id, total in db.execute(
                select(LedgerEntry.account_id, func.sum(LedgerEntry.amount_minor)).group_by(
                    LedgerEntry.account_id
                )
            )
        }
        ledger_total = int(
            db.scalar(select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0))) or 0
        )
        unbalanced = db.execute(
            select(LedgerEntry.transaction_id, func.sum(LedgerEntry.amount_minor), func.count())
            .group_by(LedgerEntry.transaction_id)
            .having(or_(func.sum(LedgerEntry.amount_minor) != 0, func.count() < 2))
            .limit(5)
        ).all()
        empty_transactions = int(
            db.scalar(
                select(func.count())
                .select_from(LedgerTransaction)
                .where(~LedgerTransaction.id.in_(select(LedgerEntry.transaction_id)))
            )
            or 0
        )
        top_ups = int(
            db.scalar(
                select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0))
                .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
                .where(LedgerTransaction.kind == "top_up", LedgerEntry.amount_minor > 0)
            )
            or 0
        )
        moved = db.execute(
            select(LedgerTransaction.payment_id, LedgerTransaction.kind, func.count())
            .where(LedgerTransaction.payment_id.is_not(None))
            .group_by(LedgerTransaction.payment_id, LedgerTransaction.kind)
        ).all()
        payment_rows = db.execute(
            select(
                Payment.id,
                Payment.status,
                Payment.amount_minor,
                Payment.refunded_minor,
                Payment.merchant_id,
                Payment.user_id,
                Payment.merchant_order_id,
                Payment.failure_code,
            )
        ).all()
        refund_rows = db.execute(select(Refund.id, Refund.payment_id, Refund.amount_minor)).all()
    found = Snapshot(
        balances={(row.owner_kind, row.owner_id): int(row.balance_minor) for row in accounts},
        payments={row.id: tuple(row[1:]) for row in payment_rows},  # type: ignore[misc]
        refunds={row.id: (row.payment_id, int(row.amount_minor)) for row in refund_rows},
        top_ups_minor=top_ups,
    )
    # The ledger on its own.
    total = sum(found.balances.values())
    if total != 0:
        notes.append(f"balances sum to {total}, not 0")
    if ledger_total != 0:
        notes.append(f"ledger entries sum to {ledger_total}, not 0")
    for row in accounts:
        if row.balance_minor != entry_sums.get(row.id, 0):
            notes.append(
                f"account {row.id} ({row.owner_kind}): balance {row.balance_minor}, "
                f"entries {entry_sums.get(row.id, 0)}"
            )
        if row.balance_minor < 0 and row.owner_kind != SYSTEM:
            notes.append(f"account {row.id} ({row.owner_kind}) is negative: {row.balance_minor}")
    for transaction_id, sum_minor, count in unbalanced:
        notes.append(f"transaction {transaction_id}: {count} entries summing to {sum_minor}")
    if empty_transactions:
        notes.append(f"{empty_transactions} ledger transactions without entries")
    system = sum(v for (kind, _), v in found.balances.items() if kind == SYSTEM)
    others = total - system
    if -system != top_ups or others != top_ups:
        notes.append(f"top-ups {top_ups}, system account {system}, users and merchants {others}")
    # Against what the clients know.
    if not before.top_up_acked_minor <= top_ups <= started_top_up_minor:
        notes.append(
            f"top-ups in the snapshot {top_ups}: acknowledged before it "
            f"{before.top_up_acked_minor}, started by its first read {started_top_up_minor}"
        )
    _check_payments(found, moved, known_orders, before, notes)
    return found


def _check_payments(
    found: Snapshot,
    moved: Any,
    known_orders: set[str],
    before: KnownBefore,
    notes: list[str],
) -> None:
    transactions: dict[str, Counter[str]] = defaultdict(Counter)
    for payment_id, kind, count in moved:
        transactions[payment_id][kind] += int(count)
    refunds_of: dict[str, list[int]] = defaultdict(list)
    for payment_id, amount in found.refunds.values():
        refunds_of[payment_id].append(amount)
    orders: Counter[tuple[str, str | None]] = Counter()
    for payment_id, (status, amount, refunded, merchant, _u, order, _f) in found.payments.items():
        orders[(merchant, order)] += 1
        charges = transactions[payment_id]["charge"]
        if charges != (1 if status == "succeeded" else 0):
            notes.append(f"payment {payment_id} ({status}) has {charges} charge transactions")
        mine = refunds_of.get(payment_id, [])
        if refunded != sum(mine) or not 0 <= refunded <= amount:
            notes.append(f"payment {payment_id}: refunded {refunded} of {amount}, rows {mine}")
        if transactions[payment_id]["refund"] != len(mine):
            notes.append(f"payment {payment_id}: {len(mine)} refunds, other refund transactions")
        if order not in known_orders:
            notes.append(f"payment {payment_id} has an order id no client sent: {order!r}")
    for (merchant, order), count in orders.items():
        if count > 1:
            notes.append(f"order {order} of {merchant} has {count} payments")
    for payment_id, amount, order in before.payments:
        row = found.payments.get(payment_id)
        if row is None or row[:2] != ("succeeded", amount) or row[5] != order:
            notes.append(f"acknowledged payment {payment_id} ({order}, {amount}) is {row}")
    for refund_id, payment_id, amount in before.refunds:
        if found.refunds.get(refund_id) != (payment_id, amount):
            notes.append(f"acknowledged refund {refund_id} is {found.refunds.get(refund_id)}")


class Reader:
    """A thread checking snapshots while the load runs; `stop()` returns how many it read."""

    def __init__(self, bank: MoneyLoad) -> None:
        self.bank = bank
        self.checks = 0
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            notes: list[str] = []
            try:
                check_snapshot(self.bank, notes)
            except Exception as error:  # a failed read is no verdict
                self.errors[type(error).__name__] += 1
            else:
                self.checks += 1
                for note in notes:
                    self.bank.book.anomaly(f"snapshot {self.checks}: {note}")
            self._stop.wait(SNAPSHOT_PAUSE_S)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=60)
        return self.checks


# -- after the load -------------------------------------------------------------------------------


def settle_and_reconcile(bank: MoneyLoad, rng: random.Random, gets_max: int) -> dict[str, object]:
    """At quiescence: the in-doubt calls against the database, then each sent again with its
    own key until answered; then the books and the database must agree exactly, the API must
    tell each payment as the database holds it (a seeded sample of `gets_max` of them, and
    every charge that met an error), and `paycode-server reconcile` must pass. Anomalies go
    to the book; returns figures for the record."""
    book = bank.book
    notes: list[str] = []
    before = check_snapshot(bank, notes)
    doubtful = [op for op in book.ops if op.state == "in_doubt"]
    _check_doubtful(bank, before, doubtful, notes)
    # Resolve: the same request with the same key, as the terminal would send it again.
    for op in doubtful:
        if op.kind == "top_up":
            continue  # no key to ask with: left to the subset check below
        expected = _truth_of(before, op)
        op.state, op.resolved, op.patient = "sent", "resent", True
        (send_charge if op.kind == "charge" else send_refund)(bank, op, again=True)
        if op.state == "in_doubt":
            notes.append(f"{op.kind} {op.order_id or op.payment_id}: no answer even now")
        elif expected is not None and (op.state, op.payment_id) != expected:
            notes.append(
                f"{op.kind} {op.order_id}: the database held {expected}, "
                f"the same key now answers {(op.state, op.payment_id)}"
            )
    after = check_snapshot(bank, notes)
    _check_exact(bank, after, notes)
    gets = _check_api(bank, after, rng, gets_max, notes)
    # The command's main in this process: its verdict is the subject here, not its process
    # (tests/server/test_settlement.py spawns it); a process would cost a second of start-up.
    reconciled = bank.server.cli_in_process("--json", "reconcile")
    if reconciled.returncode != 0:
        notes.append(
            f"paycode-server reconcile exited {reconciled.returncode}: {reconciled.stdout}"
        )
    for note in notes:
        book.anomaly(f"final: {note}")
    return {
        "in doubt at the end of the load": len(doubtful),
        "payments checked through the API": gets,
        "payments": len(after.payments),
        "refunds": len(after.refunds),
        "reconcile exit code": reconciled.returncode,
    }


def _truth_of(found: Snapshot, op: Op) -> tuple[str, str] | None:
    """What re-sending an in-doubt charge must answer, given the database before: its payment
    if it succeeded, its refusal if it recorded a failed payment; None: no trace (it may not
    have run, then the re-send does the work now)."""
    if op.kind != "charge":
        return None
    for payment_id, row in found.payments.items():
        if row[5] == op.order_id:
            return ("acked", payment_id) if row[0] == "succeeded" else ("refused", "")
    return None


def _check_doubtful(bank: MoneyLoad, found: Snapshot, doubtful: list[Op], notes: list[str]) -> None:
    """Before anything is re-sent: every succeeded payment is an acknowledged charge or an
    in-doubt one; each payment's refunds are the acknowledged ones plus some of its in-doubt
    ones; and each balance is what the acknowledged calls make it, plus what the in-doubt
    calls the database shows as done (top-ups, which carry no key: some subset of them)."""
    book = bank.book
    acked = {op.payment_id: op for op in book.ops if op.kind == "charge" and op.state == "acked"}
    doubt_orders = {op.order_id for op in doubtful if op.kind == "charge"}
    for payment_id, (status, amount, _r, _m, _u, order, _f) in found.payments.items():
        if status == "succeeded" and payment_id not in acked and order not in doubt_orders:
            notes.append(f"payment {payment_id} ({order}, {amount}) was never acknowledged")
    refunds_known: dict[str, int] = defaultdict(int)
    refunds_doubt: dict[str, list[int]] = defaultdict(list)
    for op in book.ops:
        if op.kind == "refund" and op.state == "acked":
            refunds_known[op.payment_id] += op.amount_minor
        elif op.kind == "refund" and op.state == "in_doubt":
            refunds_doubt[op.payment_id].append(op.amount_minor)
    for payment_id, row in found.payments.items():
        extra = row[2] - refunds_known.get(payment_id, 0)
        if extra not in subset_sums(refunds_doubt.get(payment_id, [])):
            notes.append(
                f"payment {payment_id}: refunded {row[2]}, acknowledged "
                f"{refunds_known.get(payment_id, 0)}, in doubt {refunds_doubt.get(payment_id)}"
            )
    top_ups_doubt: dict[int, list[int]] = defaultdict(list)
    for op in doubtful:
        if op.kind == "top_up":
            top_ups_doubt[op.customer].append(op.amount_minor)
    for index, customer in enumerate(bank.customers):
        expected = _customer_expected(bank, index, found)
        extra = found.balances.get(("user", customer.user_id), 0) - expected
        if extra not in subset_sums(top_ups_doubt.get(index, [])):
            notes.append(f"{customer.name}: balance off by {extra} beyond what was in doubt")
    for merchant in bank.merchants:
        takings = sum(
            row[1] - row[2]
            for row in found.payments.values()
            if row[0] == "succeeded" and row[3] == merchant.merchant_id
        )
        balance = found.balances.get(("merchant", merchant.merchant_id), 0)
        if balance != takings:
            notes.append(f"{merchant.name}: balance {balance}, its payments net {takings}")


def _customer_expected(bank: MoneyLoad, index: int, found: Snapshot) -> int:
    """Acknowledged top-ups, minus the customer's succeeded payments in `found`, plus their
    refunds (both checked against the acknowledged and in-doubt calls elsewhere)."""
    user_id = bank.customers[index].user_id
    top_ups = sum(
        op.amount_minor
        for op in bank.book.ops
        if op.kind == "top_up" and op.customer == index and op.state == "acked"
    )
    paid = sum(
        row[1] - row[2]
        for row in found.payments.values()
        if row[0] == "succeeded" and row[4] == user_id
    )
    return top_ups - paid


def subset_sums(amounts: list[int]) -> set[int]:
    sums = {0}
    for amount in amounts:
        sums |= {total + amount for total in sums}
    return sums


def _check_exact(bank: MoneyLoad, found: Snapshot, notes: list[str]) -> None:
    """Quiescent and resolved: the database holds exactly what the clients were told."""
    ops = bank.book.ops
    paid = {op.payment_id: op for op in ops if op.kind == "charge" and op.state == "acked"}
    succeeded = {pid for pid, row in found.payments.items() if row[0] == "succeeded"}
    for payment_id in sorted(succeeded - set(paid)):
        notes.append(f"succeeded payment {payment_id} was never acknowledged")
    for payment_id in sorted(set(paid) - succeeded):
        notes.append(f"acknowledged payment {payment_id} is {found.payments.get(payment_id)}")
    for payment_id, op in paid.items():
        row = found.payments.get(payment_id)
        merchant, customer = bank.merchants[op.merchant], bank.customers[op.customer]
        if row is not None and (row[1], row[3], row[4], row[5]) != (
            op.amount_minor,
            merchant.merchant_id,
            customer.user_id,
            op.order_id,
        ):
            notes.append(f"payment {payment_id} is {row}, the client was told otherwise")
    by_order = {row[5]: (pid, row) for pid, row in found.payments.items()}
    for op in ops:
        if op.kind == "charge" and op.state == "refused":
            held = by_order.get(op.order_id)
            if held is not None and held[1][0] == "succeeded":
                notes.append(f"refused charge {op.order_id} ({op.refusal}) is payment {held[0]}")
    orders_of_code: dict[str, list[str]] = defaultdict(list)
    for op in ops:
        if op.kind == "charge":
            orders_of_code[op.code].append(op.order_id)
    for code, orders in orders_of_code.items():
        paid_orders = [o for o in orders if o in by_order and by_order[o][1][0] == "succeeded"]
        if len(paid_orders) > 1:
            notes.append(f"one code paid {len(paid_orders)} times: {code[:24]} {paid_orders}")
    refunds = {op.refund_id: op for op in ops if op.kind == "refund" and op.state == "acked"}
    if set(refunds) != set(found.refunds):
        notes.append(
            f"refunds: {len(set(found.refunds) - set(refunds))} never acknowledged, "
            f"{len(set(refunds) - set(found.refunds))} acknowledged but missing"
        )
    for refund_id, op in refunds.items():
        if found.refunds.get(refund_id) != (op.payment_id, op.amount_minor):
            notes.append(f"refund {refund_id} is {found.refunds.get(refund_id)}")
    top_ups = [op for op in ops if op.kind == "top_up"]
    acked_minor = sum(op.amount_minor for op in top_ups if op.state == "acked")
    doubt = [op.amount_minor for op in top_ups if op.state == "in_doubt"]
    if found.top_ups_minor - acked_minor not in subset_sums(doubt):
        notes.append(f"top-ups: {found.top_ups_minor} in the ledger, {acked_minor} acknowledged")
    _check_balances(bank, found, notes)


def _check_balances(bank: MoneyLoad, found: Snapshot, notes: list[str]) -> None:
    ops = bank.book.ops
    expected: dict[tuple[str, str], int] = defaultdict(int)
    doubt: dict[tuple[str, str], list[int]] = defaultdict(list)
    for op in ops:
        user = ("user", bank.customers[op.customer].user_id)
        if op.kind == "top_up":
            if op.state == "acked":
                expected[user] += op.amount_minor
            elif op.state == "in_doubt":
                doubt[user].append(op.amount_minor)
            continue
        if op.state != "acked":
            continue
        merchant = ("merchant", bank.merchants[op.merchant].merchant_id)
        sign = 1 if op.kind == "charge" else -1
        expected[user] -= sign * op.amount_minor
        expected[merchant] += sign * op.amount_minor
    for owner, balance in found.balances.items():
        if owner[0] == SYSTEM:
            continue
        extra = balance - expected.get(owner, 0)
        if extra not in subset_sums(doubt.get(owner, [])):
            notes.append(
                f"{owner[0]} {owner[1]}: balance {balance}, the books say {expected[owner]}"
            )


def _check_api(
    bank: MoneyLoad, found: Snapshot, rng: random.Random, gets_max: int, notes: list[str]
) -> int:
    """GET /v1/payments/<id> of (a seeded sample of `gets_max`) acknowledged payments must say
    what the database holds; every charge that met an error is looked up by its
    merchant_order_id, as the till does, then by its id if it was paid."""
    ops = bank.book.ops
    paid = [op for op in ops if op.kind == "charge" and op.state == "acked"]
    sample = rng.sample(paid, min(len(paid), gets_max))
    errored = [op for op in ops if op.kind == "charge" and op.errors]
    errored_ids = {id(op) for op in errored}

    def look(op: Op) -> str | None:
        till = bank.till(op.merchant)
        if id(op) in errored_ids:
            items = till.payments_by_order(op.order_id)
            statuses = sorted(str(item.get("status")) for item in items)
            want = ["succeeded"] if op.state == "acked" else []
            if [s for s in statuses if s == "succeeded"] != want:
                return f"order {op.order_id} ({op.state}) lists {statuses}"
            if op.state != "acked":
                return None
        reply = till.payment(op.payment_id)
        row = found.payments.get(op.payment_id)
        if row is None:
            return f"acknowledged payment {op.payment_id} is not in the database"
        told = (reply.get("status"), reply.get("amount_minor"), reply.get("refunded_minor"))
        if told != row[:3]:
            return f"GET payment {op.payment_id} says {told}, the database {row[:3]}"
        return None

    def looked(op: Op) -> str | None:
        try:
            return look(op)
        except (ServerRejected, ServerUnreachable) as error:
            return f"looking up {op.order_id} failed: {error!r}"

    checked = list(dict.fromkeys([*sample, *errored]))
    with ThreadPoolExecutor(max_workers=8) as pool:
        for note in pool.map(looked, checked):
            if note:
                notes.append(note)
    return len(checked)


def checker_self_test(bank: MoneyLoad) -> list[str]:
    """Corrupt the settled database three ways, one after another, and see check_snapshot
    name each one: a balance moved without a ledger entry, an acknowledged refund deleted, an
    acknowledged payment turned failed. Returns what it missed (run it last: it breaks the
    books for good)."""
    ops = bank.book.ops
    refunded = [op for op in ops if op.kind == "refund" and op.state == "acked"]
    paid = [op for op in ops if op.kind == "charge" and op.state == "acked"]
    if not refunded or not paid:
        return ["no acknowledged payment and refund to corrupt"]
    user_id = bank.customers[0].user_id
    corruptions = [
        (
            "account",
            update(Account)
            .where(Account.owner_kind == "user", Account.owner_id == user_id)
            .values(balance_minor=Account.balance_minor + 1),
        ),
        ("acknowledged refund", delete(Refund).where(Refund.id == refunded[0].refund_id)),
        (
            "acknowledged payment",
            update(Payment).where(Payment.id == paid[0].payment_id).values(status="failed"),
        ),
    ]
    missed = []
    for expected, statement in corruptions:
        with bank.engine.begin() as connection:
            connection.execute(statement)
        notes: list[str] = []
        check_snapshot(bank, notes)
        if not any(note.startswith(expected) for note in notes):
            missed.append(f"{expected}: {notes}")
    return missed


# -- faults ---------------------------------------------------------------------------------------


def kill_worker(server: LiveServer, rng: random.Random) -> int | None:
    """SIGKILL one random gunicorn worker (the arbiter starts another); its pid, or None."""
    pids = worker_pids(server)
    if not pids:
        return None
    pid = rng.choice(pids)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return pid


def kill_server(server: LiveServer) -> None:
    """SIGKILL the server's whole process group (arbiter and workers, or the one `run`
    process) at once: no graceful shutdown, nothing flushed. LiveServer.stop() then only
    reaps it."""
    process = server._process  # the harness's own child (as bench/load.py reads it)
    assert process is not None
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    server.stop()
