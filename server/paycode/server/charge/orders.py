"""Dynamic orders owned by the server (docs/api.md, "Orders"; docs/spec.md, section 12).

A till creates an order with a signed terminal request: amount, currency, its own order id and
an expiry. The server keeps the row and answers with an unguessable token and the signed EMV
payload that carries it (26/03). A wallet pays the token, and only the row says what is paid:
the payer can neither set the amount nor pick, create or squat an order id. The order moves
from open to paid or cancelled once, by a conditional UPDATE, so of any number of wallets
racing to pay it exactly one does.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.charge.merchant_qr import collection_code_for
from paycode.server.charge.planning import ORDER_ID_CHARS_MAX, payment_json
from paycode.server.database.directory import TerminalCredential
from paycode.server.database.models import Merchant, Order, Payment, new_id
from paycode.server.http.request_fields import string_field
from paycode.server.safety.qr_keys import QrKeys
from paycode.shared.codes import ErrorCode
from paycode.shared.emv.collection import (
    ORDER_TOKEN_CHARS,
    REFERENCE_CHARS_MAX,
    build_collection_payload,
)
from paycode.shared.errors import AmountInvalid, ApiError
from paycode.shared.money import Money, format_amount, parse_amount
from paycode.shared.timestamps import iso_time

OPEN, PAID, CANCELLED, EXPIRED = "open", "paid", "cancelled", "expired"
TILL, CHECKOUT, LINK = "till", "checkout", "link"
EXPIRES_IN_S_DEFAULT = 300
EXPIRES_IN_S_MIN, EXPIRES_IN_S_MAX = 30, 3600
TOKEN_BYTES = 18
"""144 bits: base64url in ORDER_TOKEN_CHARS characters."""


def status_of(order: Order, now_s: float) -> str:
    return EXPIRED if order.status == OPEN and now_s >= order.expires_at_s else order.status


def order_payload(session: Session, order: Order, keys: QrKeys) -> str:
    merchant = session.get(Merchant, order.merchant_id)
    assert merchant is not None
    reference = order.merchant_order_id
    code = collection_code_for(
        merchant,
        amount=format_amount(Money(order.amount_minor, order.currency)),
        order_token=order.token,
        reference=reference if len(reference) <= REFERENCE_CHARS_MAX else None,
    )
    return build_collection_payload(code, keys.sign)


def order_json(session: Session, order: Order, keys: QrKeys, now_s: float) -> dict[str, Any]:
    payment = session.get(Payment, order.payment_id) if order.payment_id else None
    return {
        "order_id": order.id,
        "status": status_of(order, now_s),
        "amount": format_amount(Money(order.amount_minor, order.currency)),
        "amount_minor": order.amount_minor,
        "currency": order.currency,
        "merchant_order_id": order.merchant_order_id,
        "created_at": iso_time(order.created_at_s),
        "expires_at": iso_time(order.expires_at_s),
        "qr_payload": order_payload(session, order, keys),
        "payment": None if payment is None else payment_json(payment),
    }


def _order_money(body: dict[str, Any], merchant: Merchant) -> Money:
    amount = string_field(body, "amount", max_chars=32)
    asked = string_field(body, "currency", max_chars=3)
    assert amount is not None and asked is not None
    if asked != merchant.currency:
        raise ApiError(ErrorCode.CURRENCY_MISMATCH, f"this merchant takes {merchant.currency}")
    return _money(amount, merchant)


def _money(amount: str, merchant: Merchant) -> Money:
    try:
        return parse_amount(amount, merchant.currency)
    except AmountInvalid as error:
        raise ApiError(ErrorCode.AMOUNT_INVALID, error.message) from error


def poster(
    session: Session, terminal: TerminalCredential, body: dict[str, Any], keys: QrKeys
) -> tuple[int, dict[str, Any]]:
    """A signed poster payload: static, or for a fixed `amount` (paid any number of times);
    `"terminal": true` names the calling till."""
    merchant = session.get(Merchant, terminal.merchant_id)
    assert merchant is not None, "a terminal belongs to a merchant"
    asked = body.get("amount")
    if asked is not None and not isinstance(asked, str):
        raise ApiError(
            ErrorCode.AMOUNT_INVALID, "'amount' must be a decimal string such as '12.50'"
        )
    amount = None if asked is None else format_amount(_money(asked, merchant))
    terminal_id = terminal.terminal_id if body.get("terminal") is True else None
    code = collection_code_for(merchant, amount=amount, terminal_id=terminal_id)
    return 201, {"qr_payload": build_collection_payload(code, keys.sign)}


def expires_in_s_of(
    body: dict[str, Any],
    default_s: int = EXPIRES_IN_S_DEFAULT,
    low_s: int = EXPIRES_IN_S_MIN,
    high_s: int = EXPIRES_IN_S_MAX,
) -> int:
    value = body.get("expires_in_s", default_s)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(ErrorCode.INVALID_REQUEST, "'expires_in_s' must be a whole number")
    if not low_s <= value <= high_s:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"'expires_in_s' must be {low_s}..{high_s}")
    return value


@dataclass(frozen=True)
class OrderKind:
    """What kind of order a request creates: a till's (the default), a web shop's checkout
    or a payment link (paycode.server.charge.checkout)."""

    kind: str = TILL
    expires_in_s: int = EXPIRES_IN_S_DEFAULT
    return_url: str | None = None
    payments_max: int | None = None
    order_id_chars_max: int = ORDER_ID_CHARS_MAX


def create(
    session: Session, terminal: TerminalCredential, body: dict[str, Any], now_s: float, keys: QrKeys
) -> tuple[int, dict[str, Any]]:
    order = insert_order(
        session, terminal, body, now_s, OrderKind(expires_in_s=expires_in_s_of(body))
    )
    return 201, order_json(session, order, keys, now_s)


def insert_order(
    session: Session,
    terminal: TerminalCredential,
    body: dict[str, Any],
    now_s: float,
    kind: OrderKind,
) -> Order:
    merchant = session.get(Merchant, terminal.merchant_id)
    assert merchant is not None, "a terminal belongs to a merchant"
    money = _order_money(body, merchant)
    given = body.get("merchant_order_id")
    merchant_order_id = given if given is not None else new_id("ord")
    high = kind.order_id_chars_max
    if not isinstance(merchant_order_id, str) or not 1 <= len(merchant_order_id) <= high:
        raise ApiError(
            ErrorCode.INVALID_REQUEST, f"'merchant_order_id' must be 1-{high} characters"
        )
    if _order_id_paid(session, merchant.id, merchant_order_id):
        raise ApiError(ErrorCode.DUPLICATE_ORDER, "this order id was already paid with a code")
    order = Order(
        id=new_id("ord"),
        token=secrets.token_urlsafe(TOKEN_BYTES),
        merchant_id=merchant.id,
        terminal_id=terminal.terminal_id,
        merchant_order_id=merchant_order_id,
        amount_minor=money.amount_minor,
        currency=money.currency,
        status=OPEN,
        created_at_s=now_s,
        expires_at_s=now_s + kind.expires_in_s,
        kind=kind.kind,
        return_url=kind.return_url,
        payments_max=kind.payments_max,
        paid_count=0,
    )
    assert len(order.token) == ORDER_TOKEN_CHARS
    try:
        with session.begin_nested():
            session.add(order)
            session.flush()
    except IntegrityError as error:
        raise ApiError(ErrorCode.DUPLICATE_ORDER, "this merchant order id exists") from error
    return order


def _order_id_paid(session: Session, merchant_id: str, merchant_order_id: str) -> bool:
    found = session.scalar(
        select(Payment.id).where(
            Payment.merchant_id == merchant_id,
            Payment.merchant_order_id == merchant_order_id,
            Payment.status == "succeeded",
        )
    )
    return found is not None


def owned(session: Session, merchant_id: str, order_id: str) -> Order:
    order = session.get(Order, order_id[:32])
    if order is None or order.merchant_id != merchant_id:
        raise ApiError(ErrorCode.NOT_FOUND, "no such order for this merchant")
    return order


def cancel(
    session: Session, order: Order, keys: QrKeys, now_s: float
) -> tuple[int, dict[str, Any]]:
    """Cancel an open order (expired or not); a paid order stays paid and says so."""
    session.execute(
        update(Order)
        .where(Order.id == order.id, Order.status == OPEN)
        .values(status=CANCELLED, ended_at_s=now_s)
    )
    session.refresh(order)
    return 200, order_json(session, order, keys, now_s)


def open_order(session: Session, token: str, merchant_id: str, now_s: float) -> Order:
    """The order a wallet is about to pay, or the reason it cannot be paid."""
    order = session.scalar(select(Order).where(Order.token == token))
    if order is None or order.merchant_id != merchant_id:
        raise ApiError(ErrorCode.QR_INVALID, "this QR's order is unknown to the server")
    return _payable(order, now_s)


def _payable(order: Order, now_s: float) -> Order:
    state = status_of(order, now_s)
    if state == PAID:
        raise ApiError(ErrorCode.DUPLICATE_ORDER, "this order is already paid")
    if state == CANCELLED:
        raise ApiError(ErrorCode.ORDER_CANCELLED, "the merchant cancelled this order")
    if state == EXPIRED:
        raise ApiError(ErrorCode.ORDER_EXPIRED, "this order expired: ask for a new QR")
    return order


def payment_reference(session: Session, order: Order, now_s: float) -> str:
    """The merchant order id of the payment about to pay `order`. A link's payments are
    numbered: its count moves first, by a conditional UPDATE that no racing payer can push
    past `payments_max` (and a CHECK constraint backs it), and the n-th payment is
    `<merchant order id>/<n>`, so one succeeded payment per merchant order id still holds.
    A link of one payment (an invoice) is paid under its own id."""
    if order.kind != LINK:
        return order.merchant_order_id
    assert order.payments_max is not None, "a link says how many payments it takes"
    full = Order.paid_count + 1 >= Order.payments_max
    moved = session.execute(
        update(Order)
        .where(
            Order.id == order.id,
            Order.status == OPEN,
            Order.expires_at_s > now_s,
            Order.paid_count < Order.payments_max,
        )
        .values(
            paid_count=Order.paid_count + 1,
            status=case((full, PAID), else_=OPEN),
            ended_at_s=case((full, now_s), else_=None),
        )
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(order)
        _payable(order, now_s)
        raise AssertionError("a link that did not move is no longer payable")
    session.refresh(order)
    if order.payments_max == 1:
        return order.merchant_order_id
    return f"{order.merchant_order_id}/{order.paid_count}"


def mark_paid(session: Session, order: Order, payment_id: str, now_s: float) -> None:
    """Open -> paid, or the ApiError that says why not (another wallet won, a cancel, expiry).
    A link has already counted the payment (payment_reference): it keeps the latest one."""
    if order.kind == LINK:
        session.execute(update(Order).where(Order.id == order.id).values(payment_id=payment_id))
        return
    moved = session.execute(
        update(Order)
        .where(Order.id == order.id, Order.status == OPEN, Order.expires_at_s > now_s)
        .values(status=PAID, payment_id=payment_id, ended_at_s=now_s, paid_count=1)
    )
    if moved.rowcount == 1:  # type: ignore[attr-defined]
        return
    session.refresh(order)
    _payable(order, now_s)
    raise AssertionError("an order that did not move is no longer payable")
