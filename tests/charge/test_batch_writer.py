"""The batching charge writer (paycode.server.charge.batch_writer) on a real PostgreSQL: real
codes planned by the real planning code, committed in groups by writers of this test's own.

What it must keep: every charge ends as it would alone, each acknowledged payment exists once,
the books balance; one bad charge fails alone; two writers (two worker processes) never
deadlock; a full queue and a lost connection answer database_busy and move no money they do not
acknowledge (a retry with the same key reads what did commit).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from paycode.server.charge import planning, postgres
from paycode.server.charge.batch_settings import BatchSettings
from paycode.server.charge.batch_writer import BatchWriter, conninfo_of
from paycode.server.charge.planning import ChargeAttempt, ChargePlan
from paycode.server.charge.result import STORED, ChargeResult
from paycode.server.config import ServerConfig
from paycode.server.database.directory import Directory, TerminalCredential
from paycode.server.safety import guard, keyring
from paycode.server.safety.guard import GuardSettings
from paycode.server.safety.secretbox import SecretBox
from paycode.server.testing import Server
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.errors import ApiError
from paycode.shared.timestep import step_at
from paycode.shared.versions.base import DeviceCredential, VerifierKeys
from paycode.shared.versions.registry import by_name
from tests.support.books import assert_books_clean, balance_minor
from tests.support.servers import all_at_once
from tests.support.shop import bank_devices, bank_merchant, bank_user, charge, open_bank

pytestmark = pytest.mark.postgres

GUARD = GuardSettings()
START_MINOR = 1_000_000
AMOUNT_MINOR = 1
PINLESS_COUNT_MAX = 10_000
COUNTERS = range(4)
"""Codes per device per test: v1 counts at most 9 in a step."""
CROSSING_COUNTERS = range(8)
CROSSING_ROUNDS = 3
WAIT_FOR_S = 10.0
"""The longest a test waits for the writer to reach a state."""
_serial = itertools.count()


@dataclass(frozen=True)
class Customer:
    user_id: str
    phones: tuple[DeviceCredential, ...]


@dataclass(frozen=True)
class World:
    server: Server
    directory: Directory
    keys: VerifierKeys
    conninfo: str

    def terminal(self, key_id: str) -> TerminalCredential:
        found = self.directory.terminal(key_id)
        assert found is not None
        return found


@pytest.fixture(scope="module")
def world(app_postgres: Server) -> World:
    box = SecretBox.from_config(ServerConfig.from_env(app_postgres.env))
    keys, _ = keyring.load_keys(app_postgres.engine, box)
    directory = Directory(app_postgres.engine, box)
    return World(app_postgres, directory, keys, conninfo_of(app_postgres.engine))


@pytest.fixture
def writers(world: World) -> Iterator[Callable[..., BatchWriter]]:
    """Writers on the world's database, closed after the test."""
    made: list[BatchWriter] = []

    def make(**settings: Any) -> BatchWriter:
        made.append(BatchWriter(world.conninfo, BatchSettings(**settings)))
        return made[-1]

    yield make
    for writer in made:
        writer.close()


def customers(world: World, count: int) -> list[Customer]:
    found = []
    for _ in range(count):
        user_id = bank_user(world.server, START_MINOR, pinless_count_max=PINLESS_COUNT_MAX)
        phones = tuple(bank_devices(world.server, user_id).values())
        found.append(Customer(user_id, phones))
    return found


def tills(world: World, count: int) -> list[TerminalCredential]:
    return [world.terminal(bank_merchant(world.server)[1][0]) for _ in range(count)]


def plan(
    world: World, phone: DeviceCredential, counter: int, till: TerminalCredential
) -> ChargePlan:
    now_s = time.time()
    serial = next(_serial)
    code = by_name(phone.version).generate(phone, step=step_at(now_s), counter=counter)
    attempt = ChargeAttempt(
        terminal=till,
        nonce=f"batch-nonce-{serial}-{now_s}",
        nonce_expires_at_s=now_s + 600,
        idempotency_key=f"batch-key-{serial}-{now_s}",
        request_hash=hashlib.sha256(b"batch %d" % serial).hexdigest(),
        now_s=now_s,
        guard_scopes=guard.scopes_for(GUARD, till.terminal_id, till.merchant_id, None),
    )
    body = {"code": code, "amount": f"0.{AMOUNT_MINOR:02d}", "currency": till.currency}
    made = planning.plan_charge(attempt, body, world.directory, world.keys)
    assert made.rejection is None, made.replies
    return made


def parameters(made: ChargePlan) -> dict[str, Any]:
    return postgres.call_parameters(made, GUARD)


def paid_once(world: World, plans: list[ChargePlan]) -> None:
    """Each plan's payment exists exactly once, succeeded, with its one ledger transaction."""
    ids = [made.payment_id for made in plans]
    with world.server.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT p.id, p.status, count(t.id) FROM payments p LEFT JOIN ledger_transactions"
                " t ON t.payment_id = p.id WHERE p.id = ANY(:ids) GROUP BY p.id, p.status"
            ),
            {"ids": ids},
        ).all()
    assert sorted(rows) == sorted((i, PaymentStatus.SUCCEEDED, 1) for i in ids)


def payments_named(world: World, plans: list[ChargePlan]) -> int:
    with world.server.engine.connect() as connection:
        found = connection.execute(
            text("SELECT count(*) FROM payments WHERE id = ANY(:ids)"),
            {"ids": [made.payment_id for made in plans]},
        ).scalar_one()
    return int(found)


def outcome_of(writer: BatchWriter, made: ChargePlan) -> str:
    """The call's outcome, or the code of its ApiError (database_busy)."""
    try:
        return writer.submit(parameters(made)).outcome
    except ApiError as error:
        return str(error.code)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline_s = time.monotonic() + WAIT_FOR_S
    while not condition():
        assert time.monotonic() < deadline_s, "the writer never got there"
        time.sleep(0.01)


def waiting_on_lock(world: World, writer: BatchWriter) -> bool:
    pid = writer.backend_pid()
    with world.server.engine.connect() as connection:
        found = connection.execute(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar()
    return pid is not None and found == "Lock"


class AccountsHeld:
    """A transaction of the test's own holding a user's accounts: the writer's next call of
    that user waits, and everything submitted meanwhile queues behind it."""

    def __init__(self, world: World, user_id: str) -> None:
        self._connection = psycopg.connect(world.conninfo)
        self._connection.execute(
            "SELECT id FROM accounts WHERE owner_kind = 'user' AND owner_id = %s FOR UPDATE",
            (user_id,),
        )

    def release(self) -> None:
        self._connection.rollback()
        self._connection.close()


def test_concurrent_charges_commit_in_batches_each_once_and_the_books_balance(
    world: World, writers: Callable[..., BatchWriter]
) -> None:
    """16 threads, 96 charges of 8 customers at 4 merchants: every one succeeds, its payment
    exists once, each balance moved by its charges exactly, and batches of more than one
    call formed (the writer's counters say so)."""
    writer = writers()
    people, shops = customers(world, 8), tills(world, 4)
    plans = [
        plan(world, phone, counter, shops[(index + counter) % len(shops)])
        for index, person in enumerate(people)
        for phone in person.phones
        for counter in COUNTERS
    ]
    chunks = [plans[index::16] for index in range(16)]
    results = all_at_once(
        [lambda chunk=chunk: [outcome_of(writer, made) for made in chunk] for chunk in chunks]
    )
    assert all(out == PaymentStatus.SUCCEEDED for chunk in results for out in chunk), results
    paid_once(world, plans)
    for person in people:
        charged = len(person.phones) * len(COUNTERS) * AMOUNT_MINOR
        assert balance_minor(world.server, "user", person.user_id) == START_MINOR - charged
    assert_books_clean(world.server)
    stats = writer.stats
    assert stats.batches >= 1 and stats.largest_batch > 1, stats
    assert stats.batched_calls + stats.singles == len(plans) and stats.fallbacks == 0, stats


def test_a_charge_the_function_refuses_with_an_error_fails_alone_in_its_batch(
    world: World, writers: Callable[..., BatchWriter]
) -> None:
    """A merchant whose account is gone makes `paycode_charge` RAISE. Queued in one batch with
    four good charges (the writer held on a lock meanwhile), it fails alone: the batch is
    rolled back and run call by call, and the four pay once each."""
    writer = writers()
    (first, person), (broken, good) = customers(world, 2), tills(world, 2)
    with world.server.engine.begin() as connection:
        connection.execute(
            text("DELETE FROM accounts WHERE owner_kind = 'merchant' AND owner_id = :id"),
            {"id": broken.merchant_id},
        )
    held = AccountsHeld(world, first.user_id)
    opener = plan(world, first.phones[0], 0, good)
    batch = [plan(world, phone, 0, good) for phone in person.phones]
    batch.insert(1, plan(world, person.phones[0], 1, broken))
    with ThreadPoolExecutor(max_workers=len(batch) + 1) as pool:
        opening = pool.submit(writer.submit, parameters(opener))
        wait_until(lambda: waiting_on_lock(world, writer))
        pending = [pool.submit(writer.submit, parameters(made)) for made in batch]
        wait_until(lambda: writer.queued() == len(batch))
        held.release()
        assert opening.result().outcome == PaymentStatus.SUCCEEDED
        with pytest.raises(psycopg.errors.RaiseException, match="has no CNY account"):
            pending[1].result()
        outcomes = [future.result().outcome for index, future in enumerate(pending) if index != 1]
    assert outcomes == [PaymentStatus.SUCCEEDED] * (len(batch) - 1)
    assert writer.stats.fallbacks == 1, writer.stats
    paid_once(world, [opener, *batch[:1], *batch[2:]])
    assert payments_named(world, [batch[1]]) == 0
    assert_books_clean(world.server)


def test_two_writers_crossing_merchants_and_users_never_deadlock(
    world: World, writers: Callable[..., BatchWriter]
) -> None:
    """Two writers (as two worker processes have) charge the same customers at the same
    merchants in opposite orders, 8 threads each, three rounds: every batch locks its accounts
    in id order first, so none meets a deadlock (it would show as a fallback; without the
    prologue about one round in three does) and all finish well inside the bound."""
    pair = [writers(), writers()]
    for _ in range(CROSSING_ROUNDS):
        plans = crossing_plans(world)
        calls = [
            lambda side=side, chunk=plans[side][lane::8]: [
                outcome_of(pair[side], made) for made in chunk
            ]
            for side in (0, 1)
            for lane in range(8)
        ]
        started_s = time.monotonic()
        results = all_at_once(calls)
        assert time.monotonic() - started_s < WAIT_FOR_S
        assert all(out == PaymentStatus.SUCCEEDED for lane in results for out in lane), results
        assert [writer.stats.fallbacks for writer in pair] == [0, 0], [w.stats for w in pair]
        paid_once(world, plans[0] + plans[1])
    assert_books_clean(world.server)


def crossing_plans(world: World) -> list[list[ChargePlan]]:
    """Charges of 4 fresh customers at 4 fresh merchants, two sides, the second reversed."""
    people, shops = customers(world, 4), tills(world, 4)
    plans = [
        [
            plan(world, phone, counter, shops[(i + counter + side) % len(shops)])
            for i, person in enumerate(people)
            for phone in person.phones
            for counter in CROSSING_COUNTERS
            if counter % 2 == side
        ]
        for side in (0, 1)
    ]
    plans[1].reverse()
    return plans


def test_a_full_queue_and_a_wait_too_long_answer_database_busy_and_move_no_money(
    world: World, writers: Callable[..., BatchWriter]
) -> None:
    """A queue of one: with the writer held on a lock and one call queued, the next is refused
    at once. Waiters that give up answer database_busy: the one already running commits (its
    retry with the same key reads the stored reply), the one still queued never runs."""
    writer = writers(batch_max=4, queue_max=1, wait_s=1.0)
    (first, second, third), (shop,) = customers(world, 3), tills(world, 1)
    held = AccountsHeld(world, first.user_id)
    running, queued, refused = (
        plan(world, who.phones[0], 0, shop) for who in (first, second, third)
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        opening = pool.submit(outcome_of, writer, running)
        wait_until(lambda: waiting_on_lock(world, writer))
        waiting = pool.submit(outcome_of, writer, queued)
        wait_until(lambda: writer.queued() == 1)
        started_s = time.monotonic()
        assert outcome_of(writer, refused) == ErrorCode.DATABASE_BUSY
        assert time.monotonic() - started_s < 0.5
        assert waiting.result() == ErrorCode.DATABASE_BUSY  # gave up after wait_s, still queued
        assert opening.result() == ErrorCode.DATABASE_BUSY  # gave up while its call ran
    held.release()
    wait_until(lambda: payments_named(world, [running]) == 1)
    retry = parameters(running) | {"p_nonce": f"batch-retry-{next(_serial)}"}
    assert writer.submit(retry).outcome == STORED
    assert payments_named(world, [queued, refused]) == 0
    assert balance_minor(world.server, "user", second.user_id) == START_MINOR
    assert balance_minor(world.server, "user", third.user_id) == START_MINOR
    assert writer.stats.refused_full == 1 and writer.stats.timed_out == 2, writer.stats
    assert_books_clean(world.server)


def test_a_killed_connection_answers_its_batch_busy_and_the_next_batch_reconnects(
    world: World, writers: Callable[..., BatchWriter]
) -> None:
    """pg_terminate_backend of the writer's connection: the calls that meet it answer
    database_busy (or succeeded, had they committed before); their retries with the same keys
    then succeed or read the stored reply, on a new connection; each payment exists once."""
    writer = writers()
    people, shops = customers(world, 3), tills(world, 2)
    warm = plan(world, people[0].phones[0], 0, shops[0])
    assert writer.submit(parameters(warm)).outcome == PaymentStatus.SUCCEEDED
    killed = writer.backend_pid()
    with world.server.engine.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed})
    plans = [
        plan(world, phone, 1, shops[index % 2])
        for index, person in enumerate(people)
        for phone in person.phones
    ]
    first = all_at_once([lambda made=made: outcome_of(writer, made) for made in plans])
    assert set(first) <= {ErrorCode.DATABASE_BUSY, PaymentStatus.SUCCEEDED}, first
    assert ErrorCode.DATABASE_BUSY in first and writer.stats.connection_losses >= 1
    retries = [parameters(made) | {"p_nonce": f"batch-retry-{next(_serial)}"} for made in plans]
    again: list[ChargeResult] = all_at_once([lambda p=p: writer.submit(p) for p in retries])
    for before, after in zip(first, again, strict=True):
        expected = STORED if before == PaymentStatus.SUCCEEDED else PaymentStatus.SUCCEEDED
        assert after.outcome == expected, (first, again)
    assert writer.backend_pid() not in (None, killed)
    paid_once(world, [warm, *plans])
    assert_books_clean(world.server)


def test_a_writer_thread_that_died_is_restarted_by_the_next_submit(
    world: World, writers: Callable[..., BatchWriter]
) -> None:
    """The thread is found dead (as after an error nothing caught): submit starts another."""
    writer = writers()
    (person,), (shop,) = customers(world, 1), tills(world, 1)
    assert writer.submit(parameters(plan(world, person.phones[0], 0, shop))).outcome == "succeeded"
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    writer._thread = dead  # the state a crashed thread leaves
    assert writer.submit(parameters(plan(world, person.phones[1], 0, shop))).outcome == "succeeded"
    assert writer._thread is not dead


def test_the_server_charges_through_its_process_writer(world: World) -> None:
    """POST /v1/charges on the in-process PostgreSQL server goes through the app's writer."""
    app = world.server.app  # type: ignore[attr-defined]
    writer = app.extensions["paycode_charge_writer"].writer()
    before = writer.stats.singles + writer.stats.batched_calls
    bank = open_bank(world.server, START_MINOR, merchants=1)
    reply = charge(bank.till(), bank.code("v2"))
    assert reply["status"] == PaymentStatus.SUCCEEDED
    assert writer.stats.singles + writer.stats.batched_calls == before + 1
