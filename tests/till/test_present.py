"""The till presents a dynamic order QR (merchant_pos.present) with the server as its
neighbour: a fake one that answers each poll as scripted, on a fake clock.

The flow is the unit: create, show, poll, end or cancel, and what the cashier reads. The
window is tested under Xvfb in test_present_window.py, the whole thing against a live server
in tests/endtoend/test_present_order.py.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from paycode.appkit import http_client
from paycode.merchant_pos import terminal_client
from paycode.merchant_pos.present import (
    CANCELLED_HERE,
    NOTHING_CHARGED,
    PRESENT_WAIT_S_MAX,
    PresentWait,
    present_order,
)
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.merchant_pos.till import Sale
from paycode.shared.errors import ServerRejected, ServerUnreachable
from tests.support.orders import (
    MERCHANT_ORDER_ID,
    ORDER_ID,
    PAID,
    PAYLOAD,
    Answer,
    FakeOrders,
    order_of,
    payment_of,
)

WAIT_S = 5.0
POLL_S = 1.0
POLLS_MAX = math.ceil(WAIT_S / POLL_S) + 1


class Screen:
    """The fake clock, and what the flow showed on it."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self.shown: list[dict[str, Any]] = []
        self.countdown: list[float] = []

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now_s += seconds

    def wait(self, wait_s: float = WAIT_S) -> PresentWait:
        return PresentWait(
            wait_s=wait_s,
            poll_s=POLL_S,
            on_shown=self.shown.append,
            on_waiting=self.countdown.append,
            clock=lambda: self.now_s,
            sleep=self.sleep,
        )


def run(client: FakeOrders, amount: str = "12.50") -> tuple[Any, Screen]:
    screen = Screen()
    sale = Sale(amount, "CNY", MERCHANT_ORDER_ID)
    return present_order(client, sale, screen.wait()), screen


def test_paid_order_is_paid_with_its_payment() -> None:
    client = FakeOrders([order_of(), order_of(), PAID])
    outcome, screen = run(client)
    assert outcome.paid and outcome.headline == "PAID 12.50 CNY"
    assert outcome.payment is not None and outcome.payment["payment_id"] == "pay_1"
    assert [order["qr_payload"] for order in screen.shown] == [PAYLOAD]
    assert client.gets == 3 and client.cancel_keys == []
    [created] = client.created
    assert created["merchant_order_id"] == MERCHANT_ORDER_ID and created["idempotency_key"]
    assert created["amount"] == "12.50" and created["currency"] == "CNY"
    assert created["expires_in_s"] == 65, "the order outlives the wait: the till's cancel ends it"
    assert screen.countdown == sorted(screen.countdown, reverse=True)
    assert screen.countdown[0] == WAIT_S


def test_order_cancelled_elsewhere_is_not_paid() -> None:
    outcome, _screen = run(client := FakeOrders([order_of(), order_of("cancelled")]))
    assert not outcome.paid and outcome.code == "order_cancelled"
    assert "cancelled: nothing was paid" in outcome.message and ORDER_ID in outcome.message
    assert client.cancel_keys == []


def test_expired_order_is_not_paid() -> None:
    outcome, _screen = run(FakeOrders([order_of("expired")]))
    assert not outcome.paid and outcome.code == "order_expired"
    assert "expired" in outcome.message and outcome.headline == "NOT PAID"


def test_wait_runs_out_and_the_till_cancels() -> None:
    client = FakeOrders()
    outcome, screen = run(client)
    assert not outcome.paid and outcome.code == "order_cancelled"
    assert outcome.message.startswith(CANCELLED_HERE)
    assert len(client.cancel_keys) == 1 and client.cancel_keys[0]
    assert client.gets <= POLLS_MAX
    assert screen.now_s == pytest.approx(1000.0 + WAIT_S), "waited exactly the wait"


def test_cancel_that_lost_to_the_payment_is_paid() -> None:
    client = FakeOrders(cancel=PAID)
    outcome, _screen = run(client)
    assert outcome.paid and outcome.code == "paid" and len(client.cancel_keys) == 1


def test_paid_with_another_amount_is_not_paid() -> None:
    other = order_of("paid", payment=payment_of("1.25", 125))
    outcome, _screen = run(FakeOrders([other]))
    assert not outcome.paid and outcome.code == "amount_mismatch"
    assert "1.25 CNY" in outcome.message and "12.50 CNY" in outcome.message


def test_paid_without_a_successful_payment_is_unknown() -> None:
    outcome, _screen = run(FakeOrders([order_of("paid", payment=None)]))
    assert not outcome.paid and outcome.headline == "OUTCOME UNKNOWN"


def test_order_made_for_another_amount_is_never_shown() -> None:
    client = FakeOrders(create=order_of(amount="1.25", amount_minor=125))
    outcome, screen = run(client)
    assert not outcome.paid and outcome.code == "amount_mismatch"
    assert screen.shown == [] and len(client.cancel_keys) == 1 and client.gets == 0


def test_ctrl_c_cancels_the_order() -> None:
    client = FakeOrders([order_of(), KeyboardInterrupt()])
    outcome, _screen = run(client)
    assert not outcome.paid and outcome.code == "order_cancelled"
    assert len(client.cancel_keys) == 1


def test_ctrl_c_cancel_that_lost_to_the_payment_is_paid() -> None:
    outcome, _screen = run(FakeOrders([KeyboardInterrupt()], cancel=PAID))
    assert outcome.paid


def test_unreachable_on_create_charged_nothing() -> None:
    client = FakeOrders(create=ServerUnreachable("connection refused"))
    outcome, screen = run(client)
    assert not outcome.paid and outcome.code == "server_unreachable"
    assert outcome.message == NOTHING_CHARGED and "nothing was charged" in outcome.message
    assert screen.shown == [] and client.gets == 0 and client.cancel_keys == []


def test_refused_create_says_why() -> None:
    taken = ServerRejected("duplicate_order", "merchant order id taken", status=409)
    outcome, screen = run(FakeOrders(create=taken))
    assert not outcome.paid and outcome.code == "duplicate_order"
    assert MERCHANT_ORDER_ID in outcome.message and screen.shown == []
    invalid = ServerRejected("amount_invalid", "too large", status=400)
    outcome, _screen = run(FakeOrders(create=invalid))
    assert outcome.code == "amount_invalid" and "Amount not accepted" in outcome.message
    older = ServerRejected("not_found", "no such route", status=404)
    outcome, _screen = run(FakeOrders(create=older))
    assert outcome.code == "not_found" and "takes no orders" in outcome.message


def test_unreachable_while_polling_keeps_polling() -> None:
    gone = ServerUnreachable("timed out")
    client = FakeOrders([gone, gone, ServerRejected("internal_error", "x", status=500), PAID])
    outcome, _screen = run(client)
    assert outcome.paid and client.gets == 4 and client.cancel_keys == []


def test_unreachable_to_the_end_cancels_then_is_cancelled() -> None:
    client = FakeOrders([ServerUnreachable("down")] * 20)
    outcome, _screen = run(client)
    assert outcome.code == "order_cancelled" and client.gets <= POLLS_MAX


def test_unreachable_cancel_is_unknown_with_the_order_ids() -> None:
    gone = ServerUnreachable("down")
    client = FakeOrders([gone] * 20, cancel=gone)
    outcome, _screen = run(client)
    assert not outcome.paid and outcome.code == "outcome_unknown"
    assert outcome.headline == "OUTCOME UNKNOWN"
    assert ORDER_ID in outcome.message
    assert f"query --order-id {MERCHANT_ORDER_ID}" in outcome.message


def test_wait_is_bounded() -> None:
    with pytest.raises(AssertionError):
        PresentWait(wait_s=PRESENT_WAIT_S_MAX + 1)
    with pytest.raises(AssertionError):
        PresentWait(wait_s=1.0, poll_s=2.0)
    assert PresentWait(wait_s=PRESENT_WAIT_S_MAX).order_lifetime_s <= 3600


# -- TerminalClient: the three order calls on the wire ----------------------------------------


class Wire:
    """Stands in for ServerClient.call: records each request, answers an order or silence."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.sent: list[tuple[str, str, Any, str | None, bool]] = []

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        self.sent.append((method, path, body, kw.get("idempotency_key"), kw["signer"] is not None))
        if isinstance(self.answer, BaseException):
            raise self.answer
        return http_client.Response(200, self.answer, None)


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    wire = Wire(order_of())
    monkeypatch.setattr(terminal_client.ServerClient, "call", wire.call)
    return wire


def _client() -> TerminalClient:
    return TerminalClient("http://till.test", "term_1", b"k" * 32, sleep=lambda _s: None)


def test_client_creates_gets_and_cancels_orders(wire: Wire) -> None:
    client = _client()
    assert client.create_order("88.00", "CNY", "INV-1042", 300, "key-1")["order_id"] == ORDER_ID
    client.create_order("1.00", "CNY")
    client.order("ord_1")
    client.cancel_order("ord_1", idempotency_key="key-2")
    client.order("ord/../x")
    assert wire.sent == [
        ("POST", "/v1/orders", {"amount": "88.00", "currency": "CNY",
         "merchant_order_id": "INV-1042", "expires_in_s": 300}, "key-1", True),
        ("POST", "/v1/orders", {"amount": "1.00", "currency": "CNY"}, wire.sent[1][3], True),
        ("GET", "/v1/orders/ord_1", None, None, True),
        ("POST", "/v1/orders/ord_1/cancel", {}, "key-2", True),
        ("GET", "/v1/orders/ord%2F..%2Fx", None, None, True),
    ]  # fmt: skip
    assert wire.sent[1][3], "a create always carries an Idempotency-Key"


def test_a_poll_is_one_attempt_a_create_is_retried_with_its_key(wire: Wire) -> None:
    wire.answer = ServerUnreachable("down")
    client = _client()
    with pytest.raises(ServerUnreachable):
        client.order("ord_1", attempts_max=1)
    assert len(wire.sent) == 1
    with pytest.raises(ServerUnreachable):
        client.create_order("1.00", "CNY", idempotency_key="key-1")
    assert [sent[3] for sent in wire.sent[1:]] == ["key-1"] * terminal_client.ATTEMPTS_MAX
