"""One sale at the till: a scanned code becomes exactly one charge, and a final answer.

Each sale has one Idempotency-Key and one merchant order id. The terminal client retries with
that key on network errors and 5xx, so a dropped connection after the server debited can only
return the first outcome. When every retry failed, the till asks for the order by its id, and
if the server has no payment for it yet, sends the same charge (same key) once more; only when
that fails too does the cashier see "outcome unknown", with the order id to query later.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from paycode.merchant_pos.messages import cashier_message, waiting_message
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.errors import ServerRejected, ServerUnreachable
from paycode.shared.money import parse_amount

CONFIRM_WAIT_S = 60.0
"""How long the till waits for the customer's PIN before cancelling (the server keeps a
pending payment a little longer, PAYCODE_CONFIRM_WINDOW_S, so the till's cancel decides)."""
CONFIRM_WAIT_S_MAX = 600.0
CONFIRM_POLL_S = 1.0
"""The cashier sees PAID at most this long after the customer confirms; one GET a second from
a till that waits (only above the password-free limit) costs the server nothing to speak of."""
WAIT_REPORT_S = 10.0
"""While waiting for a customer's confirmation, the seconds left are printed this often."""
PAID_MESSAGE = "Payment received."


@dataclass(frozen=True)
class SaleOutcome:
    """What the cashier sees. `paid` is the server's final word; `code` is a stable code."""

    paid: bool
    code: str
    message: str
    amount: str
    currency: str
    merchant_order_id: str
    payment: dict[str, Any] | None = field(default=None)
    scan_to_answer_ms: float | None = None
    """From the frame the code was read in to the server's answer (camera sources)."""

    @property
    def headline(self) -> str:
        if self.paid:
            return f"PAID {self.amount} {self.currency}"
        return "NOT PAID" if self.code != ErrorCode.OUTCOME_UNKNOWN else "OUTCOME UNKNOWN"

    def as_json(self) -> dict[str, Any]:
        return {
            "paid": self.paid,
            "code": self.code,
            "message": self.message,
            "amount": self.amount,
            "currency": self.currency,
            "merchant_order_id": self.merchant_order_id,
            "payment": self.payment,
            "scan_to_answer_ms": self.scan_to_answer_ms,
        }


def new_order_id() -> str:
    return f"pos-{uuid.uuid4().hex[:20]}"


@dataclass(frozen=True)
class Sale:
    """What the cashier rang up; `order_id` names it to the server for its whole life."""

    amount: str
    currency: str
    order_id: str = field(default_factory=new_order_id)

    def outcome(
        self, paid: bool, code: str, message: str, payment: dict[str, Any] | None = None
    ) -> SaleOutcome:
        return SaleOutcome(paid, code, message, self.amount, self.currency, self.order_id, payment)

    def same_money(self, item: dict[str, Any]) -> bool:
        """Whether `item` (a payment or an order) carries exactly this sale's money: its
        integer `amount_minor` and its `currency`. The decimal `amount` is for people; an item
        without those two does not match."""
        amount_minor = item.get("amount_minor")
        return (
            type(amount_minor) is int
            and amount_minor == parse_amount(self.amount, self.currency).amount_minor
            and item.get("currency") == self.currency
        )


@dataclass(frozen=True)
class ConfirmWait:
    """How the till waits for a customer confirming a payment above their password-free
    limit: it polls the payment and cancels it when `wait_s` passes (or on Ctrl-C)."""

    wait_s: float = CONFIRM_WAIT_S
    poll_s: float = CONFIRM_POLL_S
    on_waiting: Callable[[float], None] = field(default=lambda _remaining_s: None)
    """Told the seconds left before each poll (the display shows them)."""
    on_pending: Callable[[str], None] = field(default=lambda _line: None)
    """Told once, before the first poll, the cashier's line saying why the payment waits."""
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        assert 0 < self.poll_s <= self.wait_s <= CONFIRM_WAIT_S_MAX


def charge_code(
    client: TerminalClient, code: str, sale: Sale, wait: ConfirmWait | None = None
) -> SaleOutcome:
    """Charge `code` once and return the final outcome; never raises for a server answer."""
    key = str(uuid.uuid4())
    try:
        payment = _charge(client, code, sale, key)
    except ServerRejected as error:
        return sale.outcome(False, error.code, cashier_message(error.code, error.message))
    except ServerUnreachable:
        return _settle_by_order(client, code, sale, key, wait or ConfirmWait())
    if payment.get("status") == PaymentStatus.PENDING_CONFIRMATION:
        return _await_confirmation(client, sale, payment, wait or ConfirmWait())
    return final_outcome(sale, payment)


def _charge(client: TerminalClient, code: str, sale: Sale, key: str) -> dict[str, Any]:
    return client.charge(
        code=code,
        amount=sale.amount,
        currency=sale.currency,
        merchant_order_id=sale.order_id,
        idempotency_key=key,
    )


def final_outcome(sale: Sale, payment: dict[str, Any]) -> SaleOutcome:
    """A payment in an end state, as the cashier reads it: PAID only when it succeeded with
    the sale's amount and currency. A success of another amount (an order id used before, an
    order paid for something else) is NOT PAID, `amount_mismatch`, saying what it paid."""
    if payment.get("status") == PaymentStatus.SUCCEEDED:
        if sale.same_money(payment):
            return sale.outcome(True, "paid", PAID_MESSAGE, payment)
        paid = f"{payment.get('amount')} {payment.get('currency')}"
        message = (
            f"{cashier_message(ErrorCode.AMOUNT_MISMATCH)} (payment {payment.get('payment_id')} "
            f"paid {paid}, the sale is {sale.amount} {sale.currency})"
        )
        return sale.outcome(False, ErrorCode.AMOUNT_MISMATCH, message, payment)
    code = str(payment.get("failure_code") or payment.get("status") or "payment_failed")
    return sale.outcome(False, code, cashier_message(code), payment)


class PollWait(Protocol):
    """What a bounded poll needs: ConfirmWait and present.PresentWait both are one."""

    @property
    def wait_s(self) -> float: ...
    @property
    def poll_s(self) -> float: ...
    @property
    def on_waiting(self) -> Callable[[float], None]: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def sleep(self) -> Callable[[float], None]: ...


def poll_until_ended(
    wait: PollWait, fetch: Callable[[], dict[str, Any]], waiting: Callable[[dict[str, Any]], bool]
) -> dict[str, Any] | None:
    """`fetch()` every `wait.poll_s` until an answer is no longer `waiting` (returned), or None
    when `wait.wait_s` passes or on Ctrl-C. A poll the server does not answer, or refuses, is
    not an answer: the next poll (or the caller's cancel) is. Bounded: ceil(wait/poll) + 1."""
    deadline_s = wait.clock() + wait.wait_s
    try:
        for _poll in range(math.ceil(wait.wait_s / wait.poll_s) + 1):
            remaining_s = deadline_s - wait.clock()
            if remaining_s <= 0:
                break
            wait.on_waiting(remaining_s)
            wait.sleep(min(wait.poll_s, remaining_s))
            try:
                current = fetch()
            except (ServerUnreachable, ServerRejected):
                continue
            if not waiting(current):
                return current
    except KeyboardInterrupt:
        pass
    return None


def _await_confirmation(
    client: TerminalClient, sale: Sale, payment: dict[str, Any], wait: ConfirmWait
) -> SaleOutcome:
    """Poll until the customer confirms or declines; past the wait (or on Ctrl-C), cancel.
    The cancel answers the payment as it ends, so a confirm that won the race is still paid."""
    payment_id = str(payment.get("payment_id", ""))
    wait.on_pending(waiting_message(payment.get("reason")))
    ended = poll_until_ended(
        wait,
        lambda: client.payment(payment_id),
        lambda current: current.get("status") == PaymentStatus.PENDING_CONFIRMATION,
    )
    return final_outcome(sale, ended) if ended is not None else _cancel(client, sale, payment_id)


def confirm_wait_on_stderr(
    wait_s: float, *, on_pending: Callable[[str], None] | None = None
) -> ConfirmWait:
    """A ConfirmWait that tells the cashier on stderr why the payment waits, once, then the
    seconds left every WAIT_REPORT_S; `on_pending` is told the line too (a window shows it)."""
    told: list[float] = []

    def pending(line: str) -> None:
        print(line, file=sys.stderr)
        if on_pending is not None:
            on_pending(line)

    def on_waiting(remaining_s: float) -> None:
        if told and told[-1] - remaining_s < WAIT_REPORT_S:
            return
        if told:
            print(f"  {remaining_s:.0f} s left", file=sys.stderr)
        told.append(remaining_s)

    poll_s = min(CONFIRM_POLL_S, wait_s)
    return ConfirmWait(wait_s=wait_s, poll_s=poll_s, on_waiting=on_waiting, on_pending=pending)


def _cancel(client: TerminalClient, sale: Sale, payment_id: str) -> SaleOutcome:
    try:
        return final_outcome(sale, client.cancel(payment_id))
    except (ServerUnreachable, ServerRejected):
        message = f"{cashier_message('outcome_unknown')} (payment {payment_id})"
        return sale.outcome(False, ErrorCode.OUTCOME_UNKNOWN, message)


def _settle_by_order(
    client: TerminalClient, code: str, sale: Sale, key: str, wait: ConfirmWait
) -> SaleOutcome:
    """Every retry of the charge went unanswered: the order id says whether it went through."""
    try:
        found = client.payments_by_order(sale.order_id)
    except (ServerUnreachable, ServerRejected):
        return _unknown(sale)
    for payment in found:
        if payment.get("status") == PaymentStatus.SUCCEEDED:
            return final_outcome(sale, payment)
    for payment in found:
        if payment.get("status") == PaymentStatus.PENDING_CONFIRMATION:
            return _await_confirmation(client, sale, payment, wait)
    if found:
        return final_outcome(sale, found[0])
    return _charge_again(client, code, sale, key, wait)


def _charge_again(
    client: TerminalClient, code: str, sale: Sale, key: str, wait: ConfirmWait
) -> SaleOutcome:
    """No payment has the order yet, but an attempt may still be on its way (held in a queue,
    not lost), so "not charged" is never concluded: the same charge goes once more, with its
    key, and the server's answer to it is final (whichever copy runs first, the other replays
    it)."""
    try:
        payment = _charge(client, code, sale, key)
    except ServerRejected as error:
        return sale.outcome(False, error.code, cashier_message(error.code, error.message))
    except ServerUnreachable:
        return _unknown(sale)
    if payment.get("status") == PaymentStatus.PENDING_CONFIRMATION:
        return _await_confirmation(client, sale, payment, wait)
    return final_outcome(sale, payment)


def _unknown(sale: Sale) -> SaleOutcome:
    message = f"{cashier_message('outcome_unknown')} (order {sale.order_id})"
    return sale.outcome(False, ErrorCode.OUTCOME_UNKNOWN, message)
