"""paycode.server.charge.postgres calls `paycode_charge` by parameter name: CALL_SQL, the two
name lists, call_parameters and the function PostgreSQL has installed must name the same
parameters, so a parameter renamed on one side fails here rather than at the first charge."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import text

from paycode.server.charge import postgres
from paycode.server.charge.planning import ChargeAttempt, ChargePlan
from paycode.server.database import migrate
from paycode.server.database.directory import CachedDevice, TerminalCredential
from paycode.server.database.engine import make_engine
from paycode.server.safety.guard import GuardSettings, scopes_for
from paycode.server.safety.limits import LimitSettings
from paycode.shared.versions.base import Accepted, DeviceRecord
from tests.support.servers import postgres_database

NAMES = postgres.REQUEST_PARAMETERS + postgres.CLAIM_PARAMETERS
NAMED_ARGUMENT = re.compile(r"(\w+) => %\((\w+)\)s")
"""`p_x => %(p_x)s`: one argument of the call, by name."""
GUARD = GuardSettings()
NOW_S = 1_767_225_600.5


def attempt() -> ChargeAttempt:
    terminal = TerminalCredential("term_1", "mch_1", "CNY", b"\x00" * 32)
    return ChargeAttempt(
        terminal=terminal,
        nonce="nonce-1",
        nonce_expires_at_s=NOW_S + 600,
        idempotency_key="key-1",
        request_hash="0" * 64,
        now_s=NOW_S,
        guard_scopes=scopes_for(GUARD, "term_1", "mch_1", "203.0.113.7"),
    )


def claimed_plan() -> ChargePlan:
    """A plan whose code verified: every claim parameter has a value."""
    record = DeviceRecord("dev_1", b"\x01" * 10, b"\x02" * 32, drift_steps=1)
    accepted = Accepted("v1", record, step=58_907_520, counter=0, flags=0, drift_steps=2)
    return ChargePlan(
        attempt(),
        {},
        accepted=accepted,
        device=CachedDevice(record, "usr_1"),
        payment_id="pay_1",
        transaction_id="txn_1",
        amount_minor=1250,
        currency="CNY",
        order_id="order-1",
        limits=LimitSettings().defaults_minor("CNY"),
        day=20_454,
        confirm_by_s=NOW_S + 120,
        event_id="evt_1",
        notices={},
    )


def test_call_sql_names_each_parameter_of_the_two_lists_once() -> None:
    pairs = NAMED_ARGUMENT.findall(postgres.CALL_SQL)
    assert [name for name, _ in pairs] == list(NAMES)
    assert all(name == placeholder for name, placeholder in pairs), pairs
    assert len(set(NAMES)) == len(NAMES)
    # Nothing else is passed: every `=>` and every placeholder is one of those pairs.
    assert postgres.CALL_SQL.count("=>") == postgres.CALL_SQL.count("%(") == len(pairs)


@pytest.mark.parametrize(
    "plan",
    [
        ChargePlan(attempt(), {}, rejection="code_invalid", named_handles=(("v2", bytes(8)),)),
        claimed_plan(),
    ],
    ids=["refused", "claimed"],
)
def test_call_parameters_give_every_name(plan: ChargePlan) -> None:
    parameters = postgres.call_parameters(plan, GUARD)
    assert sorted(parameters) == sorted(NAMES)
    claim_values = [parameters[name] for name in postgres.CLAIM_PARAMETERS]
    if plan.rejection is None:
        assert None not in claim_values
    else:
        assert claim_values == [None] * len(claim_values)  # refused: no claim, by name


def input_names(names: Sequence[str], modes: Sequence[str] | None) -> list[str]:
    """The IN (and INOUT) argument names of a pg_proc row; modes NULL means all IN."""
    if modes is None:
        return list(names)
    return [name for name, mode in zip(names, modes, strict=True) if mode in ("i", "b")]


@pytest.mark.postgres
def test_the_installed_function_takes_exactly_these_names() -> None:
    with postgres_database() as url:
        migrate.upgrade(url)  # as production installs it
        engine = make_engine(url)
        try:
            with engine.connect() as connection:
                rows: list[Any] = list(
                    connection.execute(
                        text(
                            "SELECT proargnames, proargmodes::text[] FROM pg_proc"
                            " WHERE proname = 'paycode_charge'"
                        )
                    )
                )
        finally:
            engine.dispose()
    assert len(rows) == 1, "one paycode_charge: an overload left behind makes calls ambiguous"
    names, modes = rows[0]
    installed = input_names(names, modes)
    assert sorted(installed) == sorted(NAMES)
    assert len(installed) == len(set(installed))
