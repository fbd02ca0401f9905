"""A sale the customer pays by scanning the till: the till presents a dynamic order QR.

The till creates an order on the server for the sale's amount (one Idempotency-Key, reused on
every retry of the create), shows the order's signed QR, and polls the order about once a
second until it ends: paid, cancelled or expired. When the wait runs out, or on Ctrl-C, the
till cancels the order, and the cancel answers the order as it ends, so a customer who paid
at the last moment is still PAID. PAID needs the order's payment to carry the sale's
`amount_minor` and currency (till.final_outcome); anything else is NOT PAID with a stable code.

Unreachable on create: nothing was charged (the QR was never shown, so nobody can pay it; an
order created before the answer was lost expires unpaid). Unreachable while polling: the till
keeps polling until the wait runs out, then cancels; if the cancel gets no answer either, the
outcome is unknown and the cashier gets the order ids to query.

Pure but for the client: time, sleep and the screen are injected (PresentWait), so tests run
the whole flow against a fake server in microseconds.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from paycode.merchant_pos.messages import cashier_message
from paycode.merchant_pos.polling import poll_until_ended
from paycode.merchant_pos.till import Sale, SaleOutcome, final_outcome
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.errors import ServerRejected, ServerUnreachable

PRESENT_WAIT_S = 120.0
"""How long the till shows the order's QR before cancelling it: time for a customer to open
the wallet, scan and confirm."""
PRESENT_WAIT_S_MAX = 600.0
PRESENT_POLL_S = 1.0
"""The cashier sees PAID at most about this long after the customer paid."""
ORDER_GRACE_S = 60
"""The order outlives the till's wait by this much, so the till's cancel ends it rather than
the server's expiry; an order whose till died still expires soon after."""
ORDER_LIFETIME_S_MIN = 30
ORDER_LIFETIME_S_MAX = 3600
"""The server's bounds on `expires_in_s` (docs/api.md, POST /v1/orders)."""

OPEN = "open"
PAID = "paid"
CANCELLED = "cancelled"
EXPIRED = "expired"
"""An order's `status`."""
ORDER_CANCELLED = ErrorCode.ORDER_CANCELLED
ORDER_EXPIRED = ErrorCode.ORDER_EXPIRED
"""The codes of an order that ended unpaid (the server's, when a wallet pays one)."""

NOTHING_CHARGED = (
    "Cannot reach the payment server: no order was shown, so nothing was charged. Check the "
    "network and start the sale again."
)
NO_ORDERS = (
    "This payment server takes no orders (no /v1/orders): nothing was charged. Update the "
    "server, or scan the customer's code instead."
)
CANCELLED_HERE = "Not paid in time: the till cancelled the order and nothing was paid."


class OrderClient(Protocol):
    """What the flow asks of the server (TerminalClient has it)."""

    def create_order(
        self,
        amount: str,
        currency: str,
        merchant_order_id: str | None = None,
        expires_in_s: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]: ...

    def order(self, order_id: str, *, attempts_max: int = ...) -> dict[str, Any]: ...

    def cancel_order(self, order_id: str, idempotency_key: str | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PresentWait:
    """How the till shows the order and waits for it to be paid."""

    wait_s: float = PRESENT_WAIT_S
    poll_s: float = PRESENT_POLL_S
    on_shown: Callable[[dict[str, Any]], None] = field(default=lambda _order: None)
    """Shows the new order's `qr_payload` to the customer (once, before the first poll)."""
    on_waiting: Callable[[float], None] = field(default=lambda _remaining_s: None)
    """Told the seconds left before each poll (the screen counts down)."""
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        assert 0 < self.poll_s <= self.wait_s <= PRESENT_WAIT_S_MAX

    @property
    def order_lifetime_s(self) -> int:
        lifetime_s = math.ceil(self.wait_s) + ORDER_GRACE_S
        return min(max(lifetime_s, ORDER_LIFETIME_S_MIN), ORDER_LIFETIME_S_MAX)


def present_order(client: OrderClient, sale: Sale, wait: PresentWait) -> SaleOutcome:
    """Create the sale's order, show its QR, wait for the payment; never raises for a server
    answer or silence, and KeyboardInterrupt while waiting cancels the order."""
    try:
        order = client.create_order(
            sale.amount,
            sale.currency,
            merchant_order_id=sale.order_id,
            expires_in_s=wait.order_lifetime_s,
            idempotency_key=str(uuid.uuid4()),
        )
    except ServerRejected as error:
        return sale.outcome(False, error.code, _refused_message(sale, error))
    except ServerUnreachable:
        return sale.outcome(False, ErrorCode.SERVER_UNREACHABLE, NOTHING_CHARGED)
    order_id = str(order.get("order_id", ""))
    if not _order_is_for(sale, order):
        _cancel_quietly(client, order_id)
        return _not_this_sale(sale, order)
    if order.get("status") != OPEN:
        return order_outcome(sale, order)
    try:
        wait.on_shown(order)
    except KeyboardInterrupt:  # stopped while the QR was being drawn: it may be on screen
        return _cancel(client, sale, order_id)
    return _await_payment(client, sale, order_id, wait)


def _refused_message(sale: Sale, error: ServerRejected) -> str:
    if error.code == ErrorCode.DUPLICATE_ORDER:
        return (
            f"Order {sale.order_id} already exists on the server: query it "
            f"(paycode-pos query --order-id {sale.order_id}) or use another order id."
        )
    if error.code == ErrorCode.NOT_FOUND:
        return NO_ORDERS
    return cashier_message(error.code, error.message)


def _order_is_for(sale: Sale, order: dict[str, Any]) -> bool:
    """The server made the order for this sale's money (never show a QR for another)."""
    return sale.same_money(order)


def _not_this_sale(sale: Sale, order: dict[str, Any]) -> SaleOutcome:
    message = (
        f"{cashier_message(ErrorCode.AMOUNT_MISMATCH)} (the server made order "
        f"{order.get('order_id')} for {order.get('amount')} {order.get('currency')}, the sale is "
        f"{sale.amount} {sale.currency}; it was cancelled and not shown)"
    )
    return sale.outcome(False, ErrorCode.AMOUNT_MISMATCH, message)


def _await_payment(
    client: OrderClient, sale: Sale, order_id: str, wait: PresentWait
) -> SaleOutcome:
    """Poll until the order ends; past the wait (or on Ctrl-C), cancel it. Silence or a
    refusal on one poll is not an answer: the next poll, or the cancel, is."""
    ended = poll_until_ended(
        wait,
        lambda: client.order(order_id, attempts_max=1),
        lambda current: current.get("status") == OPEN,
    )
    return order_outcome(sale, ended) if ended is not None else _cancel(client, sale, order_id)


def _cancel(client: OrderClient, sale: Sale, order_id: str) -> SaleOutcome:
    """The cancel answers the order as it ends: paid when the customer was quicker."""
    try:
        ended = client.cancel_order(order_id, idempotency_key=str(uuid.uuid4()))
    except (ServerUnreachable, ServerRejected):
        return _unknown(sale, order_id)
    return order_outcome(sale, ended, cancelled_here=True)


def _cancel_quietly(client: OrderClient, order_id: str) -> None:
    """Best effort: an order never shown cannot be paid anyway, and expires by itself."""
    with contextlib.suppress(ServerUnreachable, ServerRejected):
        client.cancel_order(order_id, idempotency_key=str(uuid.uuid4()))


def order_outcome(
    sale: Sale, order: dict[str, Any], *, cancelled_here: bool = False
) -> SaleOutcome:
    """An order in an end state, as the cashier reads it. A paid order is PAID only through
    its payment (final_outcome: succeeded, with the sale's amount and currency)."""
    status = order.get("status")
    order_id = str(order.get("order_id", ""))
    if status == PAID:
        payment = order.get("payment")
        if isinstance(payment, dict) and payment.get("status") == PaymentStatus.SUCCEEDED:
            return final_outcome(sale, payment)
        return _unknown(sale, order_id)  # "paid" with no successful payment to show for it
    if status == CANCELLED:
        message = CANCELLED_HERE if cancelled_here else cashier_message(ORDER_CANCELLED)
        return sale.outcome(False, ORDER_CANCELLED, f"{message} (order {order_id})")
    if status == EXPIRED:
        message = cashier_message(ORDER_EXPIRED)
        return sale.outcome(False, ORDER_EXPIRED, f"{message} (order {order_id})")
    return _unknown(sale, order_id)  # still open after a cancel, or a status this till predates


def _unknown(sale: Sale, order_id: str) -> SaleOutcome:
    message = (
        f"{cashier_message(ErrorCode.OUTCOME_UNKNOWN)} (order {order_id}, your order id "
        f"{sale.order_id}: paycode-pos query --order-id {sale.order_id})"
    )
    return sale.outcome(False, ErrorCode.OUTCOME_UNKNOWN, message)
