"""Hosted checkout and payment links (docs/api.md, "Hosted checkout"; docs/spec.md, section 15).

A web shop (a merchant terminal credential, signed like a till) creates a checkout: an order
of kind "checkout" with a `return_url`. It sends its customer to `/pay/<token>`, a page this
server renders with the signed QR of the order; once a wallet pays it, the page sends the
customer back to `return_url` with the result signed by the server's QR key, which the shop
verifies with the public keys alone (paycode.shared.checkout_return). A payment link is an
order of kind "link" that up to `payments_max` customers may pay (1: an invoice, until paid).

Both are rows of the orders table, paid by the wallet exactly like a till's order
(paycode.server.charge.collection), so the payment, the ledger and the merchant's signed
notification are those of any order payment.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from paycode.server.charge import orders
from paycode.server.charge.planning import ORDER_ID_CHARS_MAX
from paycode.server.database.directory import TerminalCredential
from paycode.server.database.models import Order, Payment
from paycode.server.safety.qr_keys import QrKeys
from paycode.shared import checkout_return
from paycode.shared.codes import ErrorCode
from paycode.shared.emv.collection import ORDER_TOKEN_CHARS
from paycode.shared.errors import ApiError
from paycode.shared.money import Money, format_amount

CHECKOUT_EXPIRES_IN_S_DEFAULT, CHECKOUT_EXPIRES_IN_S_MAX = 1800, 24 * 3600
LINK_EXPIRES_IN_S_DEFAULT, LINK_EXPIRES_IN_S_MAX = 7 * 24 * 3600, 30 * 24 * 3600
PAYMENTS_MAX_MAX = 10_000
LINK_ORDER_ID_CHARS_MAX = ORDER_ID_CHARS_MAX - len(f"/{PAYMENTS_MAX_MAX}")
"""A link's n-th payment is `<merchant order id>/<n>`: it must still fit the 64 characters of
a payment's merchant order id."""
RETURN_URL_CHARS_MAX = 2000
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
"""Where plain http is allowed: a shop on the developer's own machine (and the tests)."""
KINDS = (orders.CHECKOUT, orders.LINK)
TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{ORDER_TOKEN_CHARS}}}")


def _refuse_url(reason: str) -> ApiError:
    return ApiError(ErrorCode.RETURN_URL_INVALID, f"'return_url' {reason}")


def return_url_of(body: dict[str, Any]) -> str | None:
    """The shop's `return_url`, or None: an absolute https URL (http only to this machine),
    no user or password in it, no `paycode_` parameter of its own, printable, bounded."""
    value = body.get("return_url")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _refuse_url("must be a non-empty string")
    if len(value) > RETURN_URL_CHARS_MAX:
        raise _refuse_url(f"is longer than {RETURN_URL_CHARS_MAX} characters")
    if not value.isascii() or not value.isprintable() or " " in value:
        raise _refuse_url("must be printable ASCII without spaces (percent-encode the rest)")
    try:
        parts = urllib.parse.urlsplit(value)
        host, _port = parts.hostname, parts.port
    except ValueError as error:
        raise _refuse_url("is not a URL") from error
    if parts.scheme not in ("https", "http") or not host:
        raise _refuse_url("must be an absolute http(s) URL")
    if parts.scheme == "http" and host not in LOCAL_HOSTS:
        raise _refuse_url("must use https (http only for localhost)")
    if parts.username is not None or parts.password is not None:
        raise _refuse_url("must not carry a user name or password")
    own = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(name.startswith(checkout_return.PREFIX) for name, _ in own):
        raise _refuse_url(
            f"must not carry {checkout_return.PREFIX}* parameters: the server adds them"
        )
    return value


def _kind_of(body: dict[str, Any]) -> orders.OrderKind:
    kind = body.get("kind", orders.CHECKOUT)
    if kind not in KINDS:
        raise ApiError(ErrorCode.INVALID_REQUEST, "'kind' must be 'checkout' or 'link'")
    return_url = return_url_of(body)
    if kind == orders.CHECKOUT:
        if "payments_max" in body:
            raise ApiError(ErrorCode.INVALID_REQUEST, "'payments_max' is for links")
        expires_in_s = orders.expires_in_s_of(
            body, CHECKOUT_EXPIRES_IN_S_DEFAULT, orders.EXPIRES_IN_S_MIN, CHECKOUT_EXPIRES_IN_S_MAX
        )
        return orders.OrderKind(orders.CHECKOUT, expires_in_s, return_url)
    payments_max = body.get("payments_max", 1)
    if isinstance(payments_max, bool) or not isinstance(payments_max, int):
        raise ApiError(ErrorCode.INVALID_REQUEST, "'payments_max' must be a whole number")
    if not 1 <= payments_max <= PAYMENTS_MAX_MAX:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"'payments_max' must be 1..{PAYMENTS_MAX_MAX}")
    if return_url is not None and payments_max > 1:
        # The page cannot tell which of several payers is the one in front of it.
        raise _refuse_url("is for checkouts and links of one payment")
    expires_in_s = orders.expires_in_s_of(
        body, LINK_EXPIRES_IN_S_DEFAULT, orders.EXPIRES_IN_S_MIN, LINK_EXPIRES_IN_S_MAX
    )
    chars_max = ORDER_ID_CHARS_MAX if payments_max == 1 else LINK_ORDER_ID_CHARS_MAX
    return orders.OrderKind(orders.LINK, expires_in_s, return_url, payments_max, chars_max)


def create(
    session: Session,
    terminal: TerminalCredential,
    body: dict[str, Any],
    now_s: float,
    keys: QrKeys,
    *,
    site_url: str,
) -> tuple[int, dict[str, Any]]:
    """POST /v1/checkouts: a checkout or a payment link, and where to send the customer."""
    given = body.get("merchant_order_id")
    if isinstance(given, str) and not given.isprintable():
        # The signed return carries it on one line of its message.
        raise ApiError(ErrorCode.INVALID_REQUEST, "'merchant_order_id' must be printable")
    order = orders.insert_order(session, terminal, body, now_s, _kind_of(body))
    return 201, checkout_json(session, order, keys, now_s, site_url)


def pay_url(site_url: str, order: Order) -> str:
    return f"{site_url.rstrip('/')}/pay/{order.token}"


def checkout_json(
    session: Session, order: Order, keys: QrKeys, now_s: float, site_url: str
) -> dict[str, Any]:
    return orders.order_json(session, order, keys, now_s) | {
        "kind": order.kind,
        "token": order.token,
        "pay_url": pay_url(site_url, order),
        "return_url": order.return_url,
        "payments_max": order.payments_max,
        "paid_count": order.paid_count,
    }


def by_token(session: Session, token: str) -> Order | None:
    """The checkout or link a page shows; None for anything else (a till's order included)."""
    if not TOKEN.fullmatch(token):
        return None
    order = session.scalar(select(Order).where(Order.token == token))
    return order if order is not None and order.kind in KINDS else None


def signed_return(session: Session, order: Order, keys: QrKeys, now_s: float) -> str | None:
    """Where a paid checkout sends its customer: `return_url` with the signed `paycode_*`
    parameters after the shop's own; None while unpaid or without a return_url."""
    if order.return_url is None or orders.status_of(order, now_s) != orders.PAID:
        return None
    payment = session.get(Payment, order.payment_id) if order.payment_id else None
    assert payment is not None, "a paid order names its payment"
    fields = {
        "order": order.id,
        "merchant": order.merchant_id,
        "merchant_order_id": order.merchant_order_id,
        "status": checkout_return.STATUS_PAID,
        "payment": payment.id,
        "amount": format_amount(Money(payment.amount_minor, payment.currency)),
        "currency": payment.currency,
        "time": str(int(payment.created_at_s)),
        "key": keys.signing_key_id,
    }
    pairs = checkout_return.build_return(fields, keys.sign)
    parts = urllib.parse.urlsplit(order.return_url)
    added = urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote)
    query = f"{parts.query}&{added}" if parts.query else added
    return urllib.parse.urlunsplit(parts._replace(query=query))


def status_json(session: Session, order: Order, keys: QrKeys, now_s: float) -> dict[str, Any]:
    """What the page polls: no secret, only what the page already shows and, once paid, the
    signed way back."""
    return {
        "status": orders.status_of(order, now_s),
        "amount": format_amount(Money(order.amount_minor, order.currency)),
        "currency": order.currency,
        "paid_count": order.paid_count,
        "payments_max": order.payments_max,
        "return_to": signed_return(session, order, keys, now_s),
    }
