"""The till's sale logic after the cashier stops it (Ctrl-C or SIGTERM, merchant_pos.stopping),
in this process with scripted clients: what it sends and what the cashier reads. The real
signals to a real till process are tests/endtoend/test_sale_outcomes.py."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from paycode.merchant_pos.messages import STOPPED_WAITING
from paycode.merchant_pos.stopping import SaleStops
from paycode.merchant_pos.till import ConfirmWait, Sale, charge_code
from paycode.shared.errors import ServerUnreachable

PENDING = {"status": "pending_confirmation", "payment_id": "pay_w", "reason": "over the limit"}
CANCELLED = {"status": "cancelled", "failure_code": "cancelled_by_merchant", "payment_id": "pay_w"}


def _stopped_wait() -> ConfirmWait:
    return ConfirmWait(wait_s=5, poll_s=1, sleep=lambda _s: None, stopped=lambda: True)


class Unanswered:
    """Every charge attempt goes unanswered; the order has no payment yet."""

    def __init__(self) -> None:
        self.charges = 0

    def charge(self, **_kwargs: Any) -> dict[str, Any]:
        self.charges += 1
        raise ServerUnreachable("reply cut")

    def payments_by_order(self, _order_id: str) -> list[dict[str, Any]]:
        return []


class Waiting:
    """The charge waits for the customer's PIN; the cancel answers `cancelled`, or nothing."""

    def __init__(self, cancel_answers: bool) -> None:
        self.cancel_answers = cancel_answers
        self.cancels = 0

    def charge(self, **_kwargs: Any) -> dict[str, Any]:
        return dict(PENDING)

    def payment(self, _payment_id: str) -> dict[str, Any]:
        return dict(PENDING)

    def cancel(self, _payment_id: str) -> dict[str, Any]:
        self.cancels += 1
        if not self.cancel_answers:
            raise ServerUnreachable("no answer")
        return dict(CANCELLED)


def test_after_a_stop_a_lost_answer_is_never_charged_again() -> None:
    client, sale = Unanswered(), Sale("5.00", "CNY")
    outcome = charge_code(client, "code", sale, _stopped_wait())  # type: ignore[arg-type]
    assert client.charges == 1 and outcome.outcome == "outcome_unknown"
    assert f"paycode-pos query --order-id {sale.order_id}" in outcome.message


def test_ctrl_c_while_waiting_for_the_pin_says_the_till_stopped_it_not_a_timeout() -> None:
    client = Waiting(cancel_answers=True)
    outcome = charge_code(client, "code", Sale("5.00", "CNY"), _stopped_wait())  # type: ignore[arg-type]
    assert client.cancels == 1 and outcome.code == "cancelled_by_merchant"
    assert outcome.message == STOPPED_WAITING and outcome.outcome == "not_paid"


def test_a_stopped_wait_whose_cancel_is_unanswered_says_the_payment_waits_and_how_to_query() -> (
    None
):
    client, sale = Waiting(cancel_answers=False), Sale("5.00", "CNY")
    outcome = charge_code(client, "code", sale, _stopped_wait())  # type: ignore[arg-type]
    assert (
        outcome.outcome == "outcome_unknown" and "waiting for the customer's PIN" in outcome.message
    )
    assert f"paycode-pos query --order-id {sale.order_id}" in outcome.message


def test_ctrl_c_inside_a_charge_request_is_outcome_unknown_not_a_crash() -> None:
    class Interrupted:
        def charge(self, **_kwargs: Any) -> dict[str, Any]:
            raise KeyboardInterrupt

    sale = Sale("5.00", "CNY")
    outcome = charge_code(Interrupted(), "code", sale)  # type: ignore[arg-type]
    assert outcome.outcome == "outcome_unknown" and outcome.headline == "OUTCOME UNKNOWN"
    assert outcome.as_json()["order_id"] == sale.order_id


def test_an_answer_the_till_cannot_read_after_sending_is_outcome_unknown_not_a_traceback() -> None:
    class Garbled:
        def charge(self, **_kwargs: Any) -> Any:
            return ["not", "a", "payment"]  # a bug or a newer server's shape

    sale = Sale("5.00", "CNY")
    outcome = charge_code(Garbled(), "code", sale)  # type: ignore[arg-type]
    assert outcome.outcome == "outcome_unknown" and "(AttributeError)" in outcome.message
    assert f"paycode-pos query --order-id {sale.order_id}" in outcome.message


def _press(number: signal.Signals = signal.SIGINT) -> None:
    """A real signal to this process; Python runs the handler at the next bytecode."""
    os.kill(os.getpid(), number)
    time.sleep(0.01)


def test_a_stop_raises_only_before_the_charge_then_waits_then_gives_up_then_is_ignored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with SaleStops(stop_wait_s=30) as stops:
        with pytest.raises(KeyboardInterrupt):
            _press(signal.SIGTERM)  # scanning: the sale is cancelled
        stops.stops = 0
        with pytest.raises(KeyboardInterrupt), stops.charging():
            _press()  # the first stop in flight only asks the waits to end
            assert stops.stopped()
            _press()  # the second one gives up
        _press()  # settled: the outcome is printed first
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_stops_wait_runs_out_as_a_deadline() -> None:
    with SaleStops(stop_wait_s=0.05) as stops, pytest.raises(KeyboardInterrupt), stops.charging():
        _press()
        time.sleep(5)  # the alarm ends this after 0.05 s
    assert stops.deadline_passed
