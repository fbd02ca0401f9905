"""A fake order server for the till's `charge --present` (merchant_pos.present): the orders
API's side of one order, answering each poll as a test scripts it.

As a script, under Xvfb (tests/till/test_present_window.py): `python -m tests.support.orders
PNG` runs `paycode-pos --json charge --amount 12.50 --present --screenshot PNG` in this
process, with the real window and the real screen grab, against a fake server whose order is
paid once the screenshot exists. Only the server is fake.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paycode.shared.emv.collection import CollectionCode, build_collection_payload

ORDER_ID = "ord_0123456789abcdef"
MERCHANT_ORDER_ID = "INV-1042"


def _fake_signer(_message: bytes) -> tuple[str, bytes]:
    return "qk_test", bytes(range(64))


PAYLOAD = build_collection_payload(
    CollectionCode(
        merchant_id="mer_0123456789abcdef",
        merchant_name="Corner Cafe",
        merchant_city="Shanghai",
        currency="CNY",
        terminal_id="term_0123456789abcdef",
        amount="12.50",
        reference=MERCHANT_ORDER_ID,
        order_token="A" * 24,
    ),
    sign=_fake_signer,
)
"""An order's QR as the server issues it: dynamic, with an order token, signed (templates
80/81; the signature is made up, the till never checks it: the customer's wallet does)."""


def payment_of(amount: str = "12.50", amount_minor: int = 1250, currency: str = "CNY") -> Any:
    """A successful payment, as GET /v1/payments/{id} answers it."""
    return {
        "payment_id": "pay_1",
        "status": "succeeded",
        "amount": amount,
        "amount_minor": amount_minor,
        "currency": currency,
        "merchant_order_id": MERCHANT_ORDER_ID,
    }


def order_of(
    status: str = "open",
    *,
    amount: str = "12.50",
    amount_minor: int = 1250,
    payment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An order object, as POST/GET /v1/orders answer it."""
    return {
        "order_id": ORDER_ID,
        "status": status,
        "amount": amount,
        "amount_minor": amount_minor,
        "currency": "CNY",
        "merchant_order_id": MERCHANT_ORDER_ID,
        "expires_at": "2026-12-06T10:50:00Z",
        "qr_payload": PAYLOAD,
        "payment": payment,
    }


PAID = order_of("paid", payment=payment_of())
Answer = dict[str, Any] | BaseException


class FakeOrders:
    """The server's side of one order: each poll answers the next of `polls` (then: still
    open), raising it when it is an exception; the cancel answers `cancel`. Records what the
    till sent."""

    def __init__(
        self,
        polls: list[Answer] | None = None,
        *,
        create: Answer | None = None,
        cancel: Answer | None = None,
    ) -> None:
        self.polls = list(polls or [])
        self.create = create if create is not None else order_of()
        self.cancel = cancel if cancel is not None else order_of("cancelled")
        self.created: list[dict[str, Any]] = []
        self.gets = 0
        self.cancel_keys: list[str | None] = []

    def create_order(
        self,
        amount: str,
        currency: str,
        merchant_order_id: str | None = None,
        expires_in_s: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        self.created.append(
            {"amount": amount, "currency": currency, "merchant_order_id": merchant_order_id,
             "expires_in_s": expires_in_s, "idempotency_key": idempotency_key}
        )  # fmt: skip
        return self._answer(self.create)

    def order(self, order_id: str, *, attempts_max: int = 4) -> dict[str, Any]:
        assert order_id == ORDER_ID and attempts_max == 1, "a poll is one attempt"
        self.gets += 1
        return self._answer(self.polls.pop(0) if self.polls else order_of())

    def cancel_order(self, order_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        assert order_id == ORDER_ID
        self.cancel_keys.append(idempotency_key)
        return self._answer(self.cancel)

    @staticmethod
    def _answer(answer: Answer) -> dict[str, Any]:
        if isinstance(answer, BaseException):
            raise answer
        return answer


@dataclass
class FakeSettings:
    """What paycode-pos loads from its home (merchant_pos.settings), with the fake server as
    its client."""

    client_: Any
    currency: str = "CNY"

    def client(self) -> Any:
        return self.client_


class PaidOnceSeen(FakeOrders):
    """Open until `seen` exists (the customer's phone has the QR), then paid."""

    def __init__(self, seen: Path) -> None:
        super().__init__()
        self.seen = seen

    def order(self, order_id: str, *, attempts_max: int = 4) -> dict[str, Any]:
        opened = super().order(order_id, attempts_max=attempts_max)
        return PAID if self.seen.exists() else opened


def _present_in_window(screenshot: Path) -> int:
    from paycode.merchant_pos import cli, settings

    fake = FakeSettings(PaidOnceSeen(screenshot))
    settings.load = lambda _home: fake  # type: ignore[assignment,return-value]
    return cli.main(
        ["--json", "charge", "--amount", "12.50", "--present", "--order-id", MERCHANT_ORDER_ID,
         "--present-wait-s", "30", "--hold-s", "0", "--screenshot", str(screenshot)]
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(_present_in_window(Path(sys.argv[1])))
