"""Carry out a planned charge as one database transaction, and say how it ended.

PostgreSQL runs it as one call of the `paycode_charge` function (paycode.server.charge.postgres),
so a charge costs one round trip; given the process's batching writer, a verified code's call
is committed together with the other requests' (paycode.server.charge.batch_writer). SQLite
(the embedded default) runs the same steps as statements inside BEGIN IMMEDIATE
(paycode.server.charge.steps): they are the reference the function is held to, by a
differential test that drives both (tests/charge/test_differential.py).
The steps, in both:

    terminal live -> guard not blocking -> nonce unseen -> idempotency key new (else: its
    stored reply) -> rejection? count it for the guard (a genuine code refused for time: claim
    it), store it : device live -> order not paid yet -> claim -> drift -> accounts locked in
    id order -> payment (or a failed payment) -> ledger entries ->
    the merchant's notification (one outbox row, when it has a notify_url and a payment was
    recorded) -> store the reply
"""

from __future__ import annotations

from sqlalchemy import Engine

from paycode.server.charge import postgres, steps
from paycode.server.charge.batch_writer import BatchWriter, batchable
from paycode.server.charge.planning import ChargePlan
from paycode.server.charge.result import ChargeResult
from paycode.server.safety.guard import GuardSettings


def execute(
    engine: Engine, plan: ChargePlan, guard: GuardSettings, writer: BatchWriter | None = None
) -> ChargeResult:
    """The charge on the engine's database: the function on PostgreSQL (through `writer` when
    given and the plan is a verified code's), the steps on SQLite."""
    if engine.dialect.name == "postgresql":
        parameters = postgres.call_parameters(plan, guard)
        if writer is not None and batchable(parameters):
            return writer.submit(parameters)
        return postgres.call_with(engine, parameters)
    with engine.begin() as connection:
        return steps.run_charge(connection, plan, guard)
