"""A code's lifetime (docs/spec.md §2) and what a refusal for time leaves behind, on both
databases at once (issue 19, items 4, 12 and 22).

Each charge is planned once, in Python, at a chosen server time, and the one plan runs on
SQLite (paycode.server.charge.steps) and on PostgreSQL (the `paycode_charge` function): both
must end the same way, as in tests/charge/test_differential.py, whose seeded world this reuses.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text

from paycode.server.charge import planning, postgres, transaction
from paycode.server.charge.planning import ChargeAttempt
from paycode.server.database.directory import Directory, TerminalCredential
from paycode.server.safety import guard
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.timestep import STEP_SECONDS, step_at
from paycode.shared.versions.registry import by_name
from tests.charge.test_differential import (
    GUARD,
    LIMITS,
    NONCE_TTL_S,
    START_S,
    Backends,
    backends,
    comparable,
    read_rows,
    restore,
    table_differences,
)

__all__ = ["backends"]  # the module fixture, both databases seeded alike
pytestmark = pytest.mark.postgres

PHONE = 7
"""cai's v2 phone: money enough, live, never locked in the seeded world."""
TILL = 0
"""A CNY till of Corner Cafe."""
MADE_AT_S = (step_at(START_S) + 4) * STEP_SECONDS + 1.0
"""One second into a step: a code made then is 0..59 s old during its step and the next."""
OFFSETS_S = tuple(range(0, 601, 10))
"""Every 10 s from the making up to 10 minutes."""
LIFETIME_S = 90
"""The longest a code lives (docs/spec.md §2): 60 s, plus 30 s for a clock one step ahead of
the drift the server learned."""
ACCEPTED = frozenset({PaymentStatus.SUCCEEDED, ErrorCode.CONFIRMATION_REQUIRED})
RACE_WAIT_S = 0.5
"""Long enough for the racing charge to reach the row lock the first one holds."""
REFUSED_FOR_TIME_OR_USED = frozenset({ErrorCode.CODE_EXPIRED, ErrorCode.CODE_REPLAYED})
_serial = itertools.count()


def set_drift(backends: Backends, drift_steps: int) -> None:
    for engine in (backends.reference, backends.production):
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE devices SET drift_steps = :drift WHERE id = :id"),
                {"drift": drift_steps, "id": backends.world.phones[PHONE].device_id},
            )


def code_on(backends: Backends, clock_steps: int, counter: int) -> str:
    """A code of the phone made at MADE_AT_S on a clock `clock_steps` steps ahead."""
    credential = backends.world.phones[PHONE].credential
    step = step_at(MADE_AT_S) + clock_steps
    return by_name(credential.version).generate(credential, step=step, counter=counter)


def attempt_at(now_s: float, terminal: TerminalCredential) -> ChargeAttempt:
    """A fresh signed request of the till at `now_s`."""
    serial = next(_serial)
    return ChargeAttempt(
        terminal=terminal,
        nonce=f"lifetime-nonce-{serial}",
        nonce_expires_at_s=now_s + NONCE_TTL_S,
        idempotency_key=f"lifetime-key-{serial}",
        request_hash=hashlib.sha256(b"lifetime %d" % serial).hexdigest(),
        now_s=now_s,
        guard_scopes=guard.scopes_for(GUARD, terminal.terminal_id, terminal.merchant_id, None),
    )


def plan_at(
    backends: Backends, code: str, now_s: float, order_id: str | None = None
) -> planning.ChargePlan:
    body: dict[str, Any] = {"code": code, "amount": "0.01", "currency": "CNY"}
    if order_id is not None:
        body["merchant_order_id"] = order_id
    directory = Directory(backends.reference, backends.world.box)  # no stale cached drift
    attempt = attempt_at(now_s, backends.world.terminals[TILL])
    return planning.plan_charge(attempt, body, directory, backends.world.keys, limits=LIMITS)


def present(backends: Backends, code: str, now_s: float, order_id: str | None = None) -> str:
    """The charge at `now_s` on both databases; its outcome, the same on both."""
    plan = plan_at(backends, code, now_s, order_id)
    expected = transaction.execute(backends.reference, plan, GUARD)
    actual = transaction.execute(backends.production, plan, GUARD)
    assert comparable(actual) == comparable(expected), (expected, actual)
    return expected.outcome


def same_rows(backends: Backends) -> None:
    """Every table alike on both databases: the burns, the refusals, the payments."""
    differences = table_differences(read_rows(backends.reference), read_rows(backends.production))
    assert not differences, differences


def walk(backends: Backends, code: str) -> list[tuple[int, str]]:
    """(offset, outcome) of one code presented every 10 s until it is claimed (paid or
    burned), then every minute: once claimed, only the claim stands between it and a payment,
    and a minute apart covers every window it could come into."""
    presented: list[tuple[int, str]] = []
    claimed = False
    for offset_s in OFFSETS_S:
        if claimed and offset_s % 60:
            continue
        outcome = present(backends, code, MADE_AT_S + offset_s)
        claimed = claimed or outcome in ACCEPTED or outcome == ErrorCode.CODE_EXPIRED
        presented.append((offset_s, outcome))
    return presented


def claims_of_phone(backends: Backends) -> list[int]:
    device_id = backends.world.phones[PHONE].device_id
    counts = []
    for engine in (backends.reference, backends.production):
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT count(*) FROM claims WHERE device_id = :id"), {"id": device_id}
            ).scalar_one()
            counts.append(int(found))
    return counts


def test_a_genuine_code_pays_only_inside_its_lifetime_whatever_the_learned_drift(
    backends: Backends,
) -> None:
    """For learned drifts -1..+5: a fresh code at every 10 s offset from its making pays
    exactly while it is at most one step old on the clock where the server learned it (< 60 s
    here), two on a clock one step ahead of that (< 90 s: LIFETIME_S); and one
    code, made on a clock as learned, re-synced, or running ahead, presented again and again
    up to 10 minutes, pays at most once, never past LIFETIME_S, never after a refusal for time
    (no second life, as the window around the server's own step gave it)."""
    for engine in (backends.reference, backends.production):
        restore(engine, backends.world.snapshot)
    counters = itertools.count()
    for drift_steps in range(-1, 6):
        set_drift(backends, drift_steps)
        for ahead_steps, offset_s in itertools.product((0, 1), OFFSETS_S):
            code = code_on(backends, drift_steps + ahead_steps, next(counters))
            outcome = present(backends, code, MADE_AT_S + offset_s)
            steps_old = step_at(MADE_AT_S + offset_s) - step_at(MADE_AT_S)
            where = (drift_steps, ahead_steps, offset_s, outcome)
            assert (outcome in ACCEPTED) == (steps_old <= 1 + ahead_steps), where
            if outcome in ACCEPTED and ahead_steps:
                set_drift(backends, drift_steps)  # the drift this code taught, undone
        for clock_steps in (drift_steps, 0, drift_steps + 1, drift_steps + 2, drift_steps + 4):
            code = code_on(backends, clock_steps, next(counters))
            presented = walk(backends, code)
            set_drift(backends, drift_steps)  # what a paying code taught the server, undone
            outcomes = [out for _, out in presented]
            paid = [off_s for off_s, out in presented if out in ACCEPTED]
            where = (drift_steps, clock_steps, outcomes)
            assert len(paid) <= 1 and all(off_s < LIFETIME_S for off_s in paid), where
            refused_at = next(
                (i for i, out in enumerate(outcomes) if out == ErrorCode.CODE_EXPIRED), None
            )
            if refused_at is not None:
                assert not ACCEPTED & set(outcomes[refused_at:]), where
            assert set(outcomes) <= ACCEPTED | {ErrorCode.CODE_EXPIRED, ErrorCode.CODE_REPLAYED}, (
                where
            )


def test_an_early_code_is_burned_and_the_reply_names_no_time_to_come_back(
    backends: Backends,
) -> None:
    """A genuine code made on a clock 125 s fast is refused and claimed: 120 s later, at
    another till, it is a replay; the detail says the clock is wrong, with no figure."""
    for engine in (backends.reference, backends.production):
        restore(engine, backends.world.snapshot)
    code = code_on(backends, 4, 0)  # MADE_AT_S is 1 s into its step: 125 s ahead is 4 steps
    plan = plan_at(backends, code, MADE_AT_S)
    assert plan.rejection == ErrorCode.CODE_EXPIRED and plan.burn is not None
    detail = plan.replies[ErrorCode.CODE_EXPIRED][1]["detail"]
    assert "clock is wrong" in detail and not any(ch.isdigit() for ch in detail), detail
    assert present(backends, code, MADE_AT_S) == ErrorCode.CODE_EXPIRED
    assert claims_of_phone(backends) == [1, 1]
    later = present(backends, code, MADE_AT_S + 120.0)
    assert later == ErrorCode.CODE_REPLAYED
    same_rows(backends)


def test_a_reused_order_id_refuses_the_charge_without_burning_the_code(
    backends: Backends,
) -> None:
    """A cashier types an order id that already has a successful payment: duplicate_order,
    nothing claimed, nothing recorded; the same code then pays with a fresh order id."""
    for engine in (backends.reference, backends.production):
        restore(engine, backends.world.snapshot)
    now_s = MADE_AT_S
    assert present(backends, code_on(backends, 0, 0), now_s, "INV-7") in ACCEPTED
    code = code_on(backends, 0, 1)
    assert present(backends, code, now_s + 1, "INV-7") == ErrorCode.DUPLICATE_ORDER
    assert claims_of_phone(backends) == [1, 1]
    for engine in (backends.reference, backends.production):
        with engine.connect() as connection:
            failed = connection.execute(
                text("SELECT count(*) FROM payments WHERE failure_code = 'duplicate_order'")
            ).scalar_one()
            assert failed == 0
    assert present(backends, code, now_s + 2, "INV-8") in ACCEPTED
    same_rows(backends)


def test_a_reused_order_id_racing_its_success_gives_the_code_back_on_postgresql(
    backends: Backends,
) -> None:
    """Two tills charge one order at once: the second passed the order check before the first
    committed, claimed its code, then met the first's payment. It ends in duplicate_order and
    its claim goes with it (the function deletes it), so that code still pays."""
    for engine in (backends.reference, backends.production):
        restore(engine, backends.world.snapshot)
    first = plan_at(backends, code_on(backends, 0, 0), MADE_AT_S, "INV-race")
    second_code = code_on(backends, 0, 1)
    second = plan_at(backends, second_code, MADE_AT_S, "INV-race")
    holder = backends.production.raw_connection()
    try:
        cursor = holder.cursor()  # the first charge, its transaction left open
        cursor.execute(postgres.CALL_SQL, postgres.call_parameters(first, GUARD))
        assert cursor.fetchone()[0] == PaymentStatus.SUCCEEDED  # type: ignore[index]
        with ThreadPoolExecutor(1) as pool:
            racing = pool.submit(transaction.execute, backends.production, second, GUARD)
            time.sleep(RACE_WAIT_S)  # it waits on the merchant's account row the first holds
            assert not racing.done()
            holder.commit()
            assert racing.result(timeout=30).outcome == ErrorCode.DUPLICATE_ORDER
    finally:
        holder.close()
    assert claims_of_phone(backends)[1] == 1  # the first's only
    later = plan_at(backends, second_code, MADE_AT_S + 1, "INV-after")
    assert transaction.execute(backends.production, later, GUARD).outcome in ACCEPTED
