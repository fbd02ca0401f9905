"""One sale at the till: a scanned code becomes exactly one charge, and a final answer.

Each sale has one Idempotency-Key and one merchant order id. The terminal client retries with
that key on network errors and 5xx, so a dropped connection after the server debited can only
return the first outcome. When every retry failed, the till asks for the order by its id; only
when that fails too does the cashier see "outcome unknown", with the order id to query later.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from merchant_pos.api import TerminalClient
from merchant_pos.messages import cashier_message
from shared.errors import CodeMalformed, ServerRejected, ServerUnreachable
from shared.versions.registry import route

STDIN_LINES_MAX = 1000
"""A barcode gun types one code and Enter; a thousand lines without a code is not a sale."""
LINE_CHARS_MAX = 4096
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
        return "NOT PAID" if self.code != "outcome_unknown" else "OUTCOME UNKNOWN"

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


def charge_code(client: TerminalClient, code: str, sale: Sale) -> SaleOutcome:
    """Charge `code` once and return the final outcome; never raises for a server answer."""
    try:
        payment = client.charge(
            code=code,
            amount=sale.amount,
            currency=sale.currency,
            merchant_order_id=sale.order_id,
            idempotency_key=str(uuid.uuid4()),
        )
    except ServerRejected as error:
        return sale.outcome(False, error.code, cashier_message(error.code, error.message))
    except ServerUnreachable:
        return _settle_by_order(client, sale)
    return sale.outcome(payment.get("status") == "succeeded", "paid", PAID_MESSAGE, payment)


def _settle_by_order(client: TerminalClient, sale: Sale) -> SaleOutcome:
    """Every retry of the charge went unanswered: the order id says whether it went through."""
    try:
        found = client.payments_by_order(sale.order_id)
    except (ServerUnreachable, ServerRejected):
        message = f"{cashier_message('outcome_unknown')} (order {sale.order_id})"
        return sale.outcome(False, "outcome_unknown", message)
    for payment in found:
        if payment.get("status") == "succeeded":
            return sale.outcome(True, "paid", PAID_MESSAGE, payment)
    if found:
        code = str(found[0].get("failure_code") or "payment_failed")
        return sale.outcome(False, code, cashier_message(code), found[0])
    return sale.outcome(False, "not_charged", "The sale was not charged: scan the code again.")


def codes_from_lines(stream: TextIO, *, lines_max: int = STDIN_LINES_MAX) -> Iterator[str]:
    """Payment codes typed by a barcode gun (or pasted), one per line; other lines ignored.

    A gun in keyboard mode types the digits then Enter. Blank lines, product barcodes and
    URLs are skipped without charging; the caller takes the first code it wants.
    """
    for _ in range(lines_max):
        line = stream.readline(LINE_CHARS_MAX)
        if not line:
            return
        text = line.strip()
        if not text:
            continue
        try:
            route(text).parse(text)
        except CodeMalformed:
            continue  # a product barcode, a URL, or a misread: never charged
        yield text
