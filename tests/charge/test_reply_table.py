"""A charge's failure replies come from a constant table (planning.FAILURE_REPLIES) with their
JSON rendered once: what the transaction stores must be exactly what rendering each reply
afresh gave, and the shared table must never change."""

from __future__ import annotations

import copy
import json

import pytest

from paycode.server.charge import planning
from paycode.server.charge.planning import FAILURE_REPLIES, RECORDED_FAILURES, ChargePlan
from paycode.shared.codes import ErrorCode
from paycode.shared.money import Money
from paycode.shared.versions.base import Accepted, DeviceRecord
from tests.charge.test_call_sql import NOW_S, attempt

RECORD = DeviceRecord("dev_1", b"\x01" * 10, b"\x02" * 32, drift_steps=0)


def _plan(payment_id: str) -> ChargePlan:
    accepted = Accepted("v2", RECORD, step=58_907_520, counter=0, flags=0, drift_steps=0)
    replies, texts = planning._replies(
        attempt(),
        accepted,
        payment_id=payment_id,
        money=Money(1250, "CNY"),
        order_id="order-\u00e9",
        confirm_by_s=NOW_S + 120,
    )
    return ChargePlan(attempt(), replies, payment_id=payment_id, texts=texts)


@pytest.mark.parametrize("payment_id", ["pay_0123456789abcdef", 'pay_"\\\u00e9\u5317'])
def test_stored_texts_are_the_replies_rendered_afresh(payment_id: str) -> None:
    plan = _plan(payment_id)
    rendered = {name: [status, json.dumps(body)] for name, (status, body) in plan.replies.items()}
    assert plan.reply_texts() == rendered
    assert set(plan.texts) == set(FAILURE_REPLIES)  # success and pending are rendered per charge
    for outcome in FAILURE_REPLIES:
        body = json.loads(plan.reply_texts()[outcome][1])
        assert body["code"] == outcome
        assert body.get("payment_id") == (payment_id if outcome in RECORDED_FAILURES else None)


def test_a_plan_without_texts_renders_every_reply() -> None:
    plan = _plan("pay_1")
    bare = ChargePlan(attempt(), plan.replies)
    assert bare.reply_texts() == plan.reply_texts()


def test_the_shared_table_never_changes() -> None:
    before = copy.deepcopy(dict(FAILURE_REPLIES))
    plans = [_plan(f"pay_{index}") for index in range(3)]
    for plan in plans:
        for _status, reply in plan.replies.values():
            assert "server_time" in reply | {"server_time": NOW_S}  # what the handler sends
    assert dict(FAILURE_REPLIES) == before
    assert (
        plans[0].replies[ErrorCode.CODE_REPLAYED][1] is FAILURE_REPLIES[ErrorCode.CODE_REPLAYED][1]
    )
    insufficient = ErrorCode.INSUFFICIENT_FUNDS
    assert plans[0].replies[insufficient][1] is not plans[1].replies[insufficient][1]
