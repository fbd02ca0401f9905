"""One sale at the till: a scanned code becomes exactly one charge, and a final answer.

Each sale has one Idempotency-Key and one merchant order id. The terminal client retries with
that key on network errors and 5xx, so a dropped connection after the server debited can only
return the first outcome. When every retry failed, the till asks for the order by its id, and
if the server has no payment for it yet, sends the same charge (same key) once more; only when
that fails too does the cashier see "outcome unknown", with the order id to query later.

A refused connection is the one silence that is an answer: no byte of the charge left, so the
sale is NOT PAID (`server_unreachable`). Ctrl-C and SIGTERM follow merchant_pos.stopping.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from paycode.merchant_pos.messages import (
    STOPPED_WAITING,
    cashier_message,
    unknown_message,
    waiting_message,
)
from paycode.merchant_pos.offline_outcome import PAID_OFFLINE, OfflineReceipt, OfflineSide
from paycode.merchant_pos.polling import poll_until_ended
from paycode.merchant_pos.stopping import SaleStops
from paycode.merchant_pos.terminal_client import TerminalClient
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.errors import ServerNotReached, ServerRejected, ServerUnreachable
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
RESOLVE_TIMEOUT_S = 3.0
"""After a stop whose wait ran out, the one lookup of the order by its id gets this long."""


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
    offline: OfflineReceipt | None = None
    """Set when the till accepted the code offline (PAID OFFLINE)."""
    hint: str = ""
    """A line the screen shows under the sentence (the line is down: ask for an OFFLINE code)."""

    @property
    def outcome(self) -> str:
        """paid, not_paid (definitively) or outcome_unknown (query the order before charging
        again): what a script reads from --json and the exit status (docs/pos.md)."""
        if self.paid:
            return PAID_OFFLINE if self.offline is not None else "paid"
        return "outcome_unknown" if self.code == ErrorCode.OUTCOME_UNKNOWN else "not_paid"

    @property
    def headline(self) -> str:
        if self.paid:
            word = "PAID OFFLINE" if self.offline is not None else "PAID"
            return f"{word} {self.amount} {self.currency}"
        return "NOT PAID" if self.code != ErrorCode.OUTCOME_UNKNOWN else "OUTCOME UNKNOWN"

    def as_json(self) -> dict[str, Any]:
        offline = self.offline
        extra: dict[str, Any] = (
            {}
            if offline is None
            else {
                "acceptance_id": offline.acceptance_id,
                "cert": offline.cert,
                "counter": offline.counter,
                "offline_unsynced": offline.note,
            }
        )
        if self.hint:
            extra["hint"] = self.hint
        return extra | {
            "outcome": self.outcome,
            "order_id": self.merchant_order_id,
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
    offline: OfflineSide | None = field(default=None, compare=False, repr=False)
    """Decides the sale offline when the line is down (docs/offline.md 4.2); None: never."""

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
    stopped: Callable[[], bool] = field(default=lambda: False)
    """True once the cashier stopped the sale: the wait ends and the payment is cancelled."""

    def __post_init__(self) -> None:
        assert 0 < self.poll_s <= self.wait_s <= CONFIRM_WAIT_S_MAX


def charge_code(
    client: TerminalClient,
    code: str,
    sale: Sale,
    wait: ConfirmWait | None = None,
    stops: SaleStops | None = None,
) -> SaleOutcome:
    """Charge `code` once and return the final outcome; never raises for a server answer,
    nor for Ctrl-C (KeyboardInterrupt) once the charge may be on its way."""
    wait = wait or ConfirmWait()
    if stops is not None:
        wait = dataclasses.replace(wait, stopped=stops.stopped)
    if sale.offline is not None and sale.offline.skip_online(code):
        if stops is not None:
            stops.settled()  # a stop may not cut the log's append from the screen that says it
        not_tried = sale.outcome(False, ErrorCode.SERVER_UNREACHABLE, LINE_JUST_DOWN)
        return sale.offline(code, sale, not_tried)
    try:
        with stops.charging() if stops is not None else nullcontext():
            outcome = _charge_once(client, code, sale, wait)
    except KeyboardInterrupt:
        if stops is not None and stops.deadline_passed:
            return _resolve_after_stop(client, sale)
        return sale.outcome(False, ErrorCode.OUTCOME_UNKNOWN, _stopped_unknown(sale))
    except Exception as error:  # a bug, or an answer this till cannot read, after sending
        if os.environ.get("PAYCODE_DEBUG"):
            traceback.print_exc()
        why = (
            f"The till failed while the charge was on its way ({type(error).__name__}): the "
            "sale may or may not be paid."
        )
        return sale.outcome(False, ErrorCode.OUTCOME_UNKNOWN, unknown_message(sale.order_id, why))
    return _offline_when_down(code, sale, outcome, wait)


LINE_DOWN = frozenset({ErrorCode.SERVER_UNREACHABLE, ErrorCode.OUTCOME_UNKNOWN})
"""Online outcomes after which the till may decide alone (docs/offline.md 4.2 step 1)."""
LINE_JUST_DOWN = "The server was unreachable moments ago: no online charge was tried."


def _offline_when_down(
    code: str, sale: Sale, outcome: SaleOutcome, wait: ConfirmWait
) -> SaleOutcome:
    """The online attempt could not end the sale because the line is down: the offline
    decision (if this sale has one) ends it; a sale the cashier stopped stays as it ended."""
    if sale.offline is None or outcome.code not in LINE_DOWN or wait.stopped():
        return outcome
    return sale.offline(code, sale, outcome)


def _charge_once(client: TerminalClient, code: str, sale: Sale, wait: ConfirmWait) -> SaleOutcome:
    key = str(uuid.uuid4())
    try:
        payment = _charge(client, code, sale, key)
    except ServerRejected as error:
        return sale.outcome(False, error.code, cashier_message(error.code, error.message))
    except ServerNotReached:
        return sale.outcome(False, ErrorCode.SERVER_UNREACHABLE, _not_reached_message())
    except ServerUnreachable:
        return _settle_by_order(client, code, sale, key, wait)
    if payment.get("status") == PaymentStatus.PENDING_CONFIRMATION:
        return _await_confirmation(client, sale, payment, wait)
    return final_outcome(sale, payment)


def _not_reached_message() -> str:
    return cashier_message(ErrorCode.SERVER_UNREACHABLE)


def _stopped_unknown(sale: Sale) -> str:
    why = "Stopped before the server answered: the sale may or may not be paid."
    return unknown_message(sale.order_id, why)


def _resolve_after_stop(client: TerminalClient, sale: Sale) -> SaleOutcome:
    """The answer did not come within the stop's wait: one lookup of the order by its id,
    bounded, decides if it can (a third Ctrl-C ends it too); else OUTCOME UNKNOWN."""
    quick = dataclasses.replace(client, timeout_s=min(client.timeout_s, RESOLVE_TIMEOUT_S))
    try:
        found = quick.payments_by_order(sale.order_id, attempts_max=1)
    except (ServerUnreachable, ServerRejected, KeyboardInterrupt):
        found = []
    ended = [p for p in found if p.get("status") != PaymentStatus.PENDING_CONFIRMATION]
    succeeded = [p for p in ended if p.get("status") == PaymentStatus.SUCCEEDED]
    if succeeded or ended:
        return final_outcome(sale, (succeeded or ended)[0])
    return sale.outcome(False, ErrorCode.OUTCOME_UNKNOWN, _stopped_unknown(sale))


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
        wait.stopped,
    )
    if ended is not None:
        return final_outcome(sale, ended)
    return _cancel(client, sale, payment_id, by_cashier=wait.stopped())


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


def _cancel(
    client: TerminalClient, sale: Sale, payment_id: str, *, by_cashier: bool = False
) -> SaleOutcome:
    """Cancel the waiting payment; `by_cashier`: the cashier stopped the wait (Ctrl-C), which
    the cashier reads, rather than that the customer took too long."""
    try:
        ended = final_outcome(sale, client.cancel(payment_id))
    except (ServerUnreachable, ServerRejected):
        why = (
            f"The payment {payment_id} was waiting for the customer's PIN and its cancel got "
            "no answer: it may still be paid."
        )
        return sale.outcome(False, ErrorCode.OUTCOME_UNKNOWN, unknown_message(sale.order_id, why))
    if by_cashier and ended.code == ErrorCode.CANCELLED_BY_MERCHANT:
        return dataclasses.replace(ended, message=STOPPED_WAITING)
    return ended


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
    if wait.stopped():  # the cashier stopped the sale: no new attempt, though one may be on its way
        return _unknown(sale)
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
    return sale.outcome(False, ErrorCode.OUTCOME_UNKNOWN, unknown_message(sale.order_id))
