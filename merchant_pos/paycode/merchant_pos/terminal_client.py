"""The terminal's HTTP client: signed requests to /v1/charges, /v1/payments, /v1/orders and
/v1/offline (docs/api.md, docs/offline.md 4.1 and 5).

A sale has one Idempotency-Key, reused on every retry of that sale, so a connection dropped
after the server debited can only ever return the first outcome, never charge twice. Retries
are bounded, with exponential back-off, for network failures and 5xx answers only.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from paycode.appkit.http_client import ServerClient
from paycode.merchant_pos.offline_records import Acceptance
from paycode.shared import terminal_auth
from paycode.shared.errors import ServerNotReached, ServerRejected, ServerUnreachable

ATTEMPTS_MAX = 4
BACKOFF_FIRST_S = 0.25


@dataclass
class TerminalClient:
    base_url: str
    key_id: str
    secret: bytes = field(repr=False)
    timeout_s: float = 10.0
    clock_offset_s: float = 0.0
    sleep: Callable[[float], None] = time.sleep

    def _signer(self, method: str, path: str, body: bytes) -> dict[str, str]:
        timestamp_s = int(time.time() + self.clock_offset_s)
        return terminal_auth.sign_headers(
            self.key_id, self.secret, method, path, body, timestamp_s=timestamp_s
        )

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        attempts_max: int = ATTEMPTS_MAX,
    ) -> dict[str, Any]:
        """One logical request, retried (same key, fresh signature) on network errors and 5xx.
        Raises ServerNotReached only when no attempt reached the server: one that may have
        (an answer lost, a 5xx) makes the last failure a plain ServerUnreachable."""
        assert 1 <= attempts_max <= ATTEMPTS_MAX
        client = ServerClient(self.base_url, timeout_s=self.timeout_s)
        delay_s = BACKOFF_FIRST_S
        maybe_received = False
        for attempt in range(1, attempts_max + 1):
            try:
                reply = client.call(
                    method, path, body, signer=self._signer, idempotency_key=idempotency_key
                )
            except ServerNotReached as error:
                if attempt == attempts_max:
                    if maybe_received:
                        raise ServerUnreachable(error.message) from error
                    raise
            except ServerUnreachable:
                maybe_received = True
                if attempt == attempts_max:
                    raise
            except ServerRejected as error:
                maybe_received = True
                if error.status < 500 or attempt == attempts_max:
                    raise
            else:
                if reply.clock_offset_s is not None:
                    self.clock_offset_s = reply.clock_offset_s
                return reply.body
            self.sleep(delay_s)
            delay_s *= 2
        raise AssertionError("unreachable: the loop returns or raises")

    def charge(
        self,
        *,
        code: str,
        amount: str,
        currency: str,
        merchant_order_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"code": code, "amount": amount, "currency": currency}
        if merchant_order_id is not None:
            body["merchant_order_id"] = merchant_order_id
        key = idempotency_key or str(uuid.uuid4())
        return self._call("POST", "/v1/charges", body, idempotency_key=key)

    def offline_keys(self) -> dict[str, Any]:
        """The server's offline keys, denied certificates and this till's offline limits."""
        return self._call("GET", "/v1/offline/keys")

    def offline_accept(
        self, record: Acceptance, *, attempts_max: int = ATTEMPTS_MAX
    ) -> dict[str, Any]:
        """Forwards one logged offline acceptance; its id is the Idempotency-Key, so a retry,
        today or days later, gets the first answer and moves nothing twice."""
        body: dict[str, Any] = {
            "id": record.id,
            "seq": record.seq,
            "prev": record.prev,
            "code": record.code,
            "amount_minor": record.amount_minor,
            "currency": record.currency,
            "merchant_order_id": record.order,
            "at_s": record.at_s,
        }
        return self._call(
            "POST",
            "/v1/offline/acceptances",
            body,
            idempotency_key=record.id,
            attempts_max=attempts_max,
        )

    def merchant(self) -> dict[str, Any]:
        """The merchant this terminal collects for (for collection QR posters)."""
        return self._call("GET", "/v1/merchant")

    def collection_code(self, *, amount: str | None, this_terminal: bool) -> str:
        """A poster payload signed by the server: static, or for a fixed `amount`."""
        body: dict[str, Any] = {"terminal": this_terminal}
        if amount is not None:
            body["amount"] = amount
        reply = self._call("POST", "/v1/collection-codes", body, idempotency_key=str(uuid.uuid4()))
        return str(reply["qr_payload"])

    def payment(self, payment_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/payments/{payment_id}")

    def cancel(self, payment_id: str, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Cancel a payment waiting for the customer's confirmation; answers the payment as it
        ends (succeeded, if the customer confirmed first)."""
        key = idempotency_key or str(uuid.uuid4())
        return self._call("POST", f"/v1/payments/{payment_id}/cancel", {}, idempotency_key=key)

    def payments_by_order(
        self, merchant_order_id: str, *, attempts_max: int = ATTEMPTS_MAX
    ) -> list[dict[str, Any]]:
        path = f"/v1/payments?merchant_order_id={quote(merchant_order_id)}"
        reply = self._call("GET", path, attempts_max=attempts_max)
        items: list[dict[str, Any]] = reply.get("items", [])
        return items

    def create_order(
        self,
        amount: str,
        currency: str,
        merchant_order_id: str | None = None,
        expires_in_s: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """A dynamic order the customer pays by scanning its `qr_payload` (the till presents
        it); one key per order, reused on every retry, so a lost answer never makes two."""
        body: dict[str, Any] = {"amount": amount, "currency": currency}
        if merchant_order_id is not None:
            body["merchant_order_id"] = merchant_order_id
        if expires_in_s is not None:
            body["expires_in_s"] = expires_in_s
        key = idempotency_key or str(uuid.uuid4())
        return self._call("POST", "/v1/orders", body, idempotency_key=key)

    def create_checkout(
        self, body: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """A hosted checkout or payment link (docs/api.md, "Hosted checkout"): `body` as
        POST /v1/checkouts takes it; the answer's `pay_url` is where the customer goes."""
        key = idempotency_key or str(uuid.uuid4())
        return self._call("POST", "/v1/checkouts", body, idempotency_key=key)

    def qr_keys(self) -> list[dict[str, str]]:
        """The server's QR public keys: they verify a checkout's signed return."""
        keys: list[dict[str, str]] = self._call("GET", "/v1/qr-keys")["keys"]
        return keys

    def order(self, order_id: str, *, attempts_max: int = ATTEMPTS_MAX) -> dict[str, Any]:
        """The order as it stands (`payment` is its payment once paid). A till polling it asks
        `attempts_max=1`: the next poll is its retry, and a poll must not outlast the wait."""
        return self._call("GET", _order_path(order_id), attempts_max=attempts_max)

    def cancel_order(self, order_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Stop taking payment for an order; answers the order as it ends (still `paid` when
        the customer paid first)."""
        key = idempotency_key or str(uuid.uuid4())
        return self._call("POST", f"{_order_path(order_id)}/cancel", {}, idempotency_key=key)

    def refund(
        self, payment_id: str, *, amount: str | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {} if amount is None else {"amount": amount}
        key = idempotency_key or str(uuid.uuid4())
        return self._call("POST", f"/v1/payments/{payment_id}/refunds", body, idempotency_key=key)

    def points_mandates(self, *, reference: str | None = None) -> dict[str, Any]:
        """The merchant's live points mandates (docs/api.md "Points mandates"), or those the
        customer bound with `reference` (its customer number here)."""
        query = "" if reference is None else f"?reference={quote(reference, safe='')}"
        return self._call("GET", f"/v1/points/mandates{query}")

    def redeem_points(
        self,
        *,
        mandate_id: str,
        merchant_order_id: str,
        amount: str,
        currency: str,
        points: int,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Deduct `points` under the mandate and money for the rest of `amount`, atomically."""
        body: dict[str, Any] = {
            "mandate_id": mandate_id,
            "merchant_order_id": merchant_order_id,
            "amount": amount,
            "currency": currency,
            "points": points,
        }
        key = idempotency_key or str(uuid.uuid4())
        return self._call("POST", "/v1/points/redemptions", body, idempotency_key=key)

    def refund_points(
        self,
        payment_id: str,
        *,
        points: int | None = None,
        amount: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Refund a redemption's points leg and/or money leg (default: the rest of both)."""
        body: dict[str, Any] = {}
        if points is not None:
            body["points"] = points
        if amount is not None:
            body["amount"] = amount
        key = idempotency_key or str(uuid.uuid4())
        return self._call("POST", f"/v1/payments/{payment_id}/refunds", body, idempotency_key=key)


def _order_path(order_id: str) -> str:
    """The server makes order ids (`ord_...`); whatever one holds stays one path segment."""
    return f"/v1/orders/{quote(order_id, safe='')}"
