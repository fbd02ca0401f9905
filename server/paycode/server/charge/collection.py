"""A consumer pays a merchant's collection QR (EMV MPM) online, from the wallet.

The wallet scans the poster, shows the merchant and the amount, and sends the payload it
read; the server trusts nothing in it but the merchant id it names: name, currency and
terminal are checked against the merchant's own rows. A dynamic QR fixes the amount and an
order reference, and the reference pays once (the same partial unique index as charges).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.books import ledger
from paycode.server.charge.planning import payment_json
from paycode.server.database.models import Device, Merchant, Payment, Terminal, new_id
from paycode.server.http.request_fields import string_field
from paycode.server.notifications import events
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.emv.collection import CollectionCode, read_collection
from paycode.shared.errors import AmountInvalid, ApiError, CodeMalformed
from paycode.shared.money import Money, format_amount, parse_amount

QR_PAYLOAD_CHARS_MAX = 512
ID_CHARS_MAX = 64
CODE_VERSION_MPM = "mpm"
"""What payments made from a collection QR show as their code version."""


def _collection(body: dict[str, Any]) -> CollectionCode:
    payload = string_field(body, "qr_payload", max_chars=QR_PAYLOAD_CHARS_MAX)
    assert payload is not None
    try:
        return read_collection(payload)
    except CodeMalformed as error:
        raise ApiError(
            ErrorCode.QR_INVALID, f"not a Paycode collection QR: {error.message}"
        ) from error


def _merchant(session: Session, code: CollectionCode) -> Merchant:
    merchant = session.get(Merchant, code.merchant_id[:ID_CHARS_MAX])
    if merchant is None:
        raise ApiError(ErrorCode.NOT_FOUND, "this QR names a merchant the server does not know")
    if code.currency != merchant.currency:
        raise ApiError(ErrorCode.CURRENCY_MISMATCH, f"this merchant takes {merchant.currency}")
    if code.terminal_id is not None:
        terminal = session.get(Terminal, code.terminal_id[:ID_CHARS_MAX])
        if terminal is None or terminal.merchant_id != merchant.id:
            raise ApiError(ErrorCode.QR_INVALID, "this QR names a terminal of another merchant")
    return merchant


def _amount(body: dict[str, Any], code: CollectionCode) -> Money:
    """A dynamic QR's amount is the amount; a static QR needs the consumer's amount."""
    asked = body.get("amount")
    if asked is not None and not isinstance(asked, str):
        raise ApiError(
            ErrorCode.AMOUNT_INVALID, "'amount' must be a decimal string such as '12.50'"
        )
    try:
        fixed = parse_amount(code.amount, code.currency) if code.amount is not None else None
        wanted = parse_amount(asked, code.currency) if asked is not None else None
    except AmountInvalid as error:
        raise ApiError(ErrorCode.AMOUNT_INVALID, error.message) from error
    if fixed is not None and wanted is not None and fixed != wanted:
        raise ApiError(
            ErrorCode.AMOUNT_INVALID, f"this QR fixes the amount at {format_amount(fixed)}"
        )
    amount = fixed or wanted
    if amount is None:
        raise ApiError(ErrorCode.AMOUNT_INVALID, "this QR has no amount: send 'amount'")
    return amount


def pay(session: Session, device: Device, body: dict[str, Any], now_s: float) -> dict[str, Any]:
    """Move the money, or raise ApiError having moved nothing."""
    code = _collection(body)
    merchant = _merchant(session, code)
    money = _amount(body, code)
    payer = ledger.account(session, "user", device.user_id, money.currency)
    payee = ledger.account(session, "merchant", merchant.id, money.currency)
    if payer is None:
        raise ApiError(ErrorCode.CURRENCY_MISMATCH, f"you have no {money.currency} account")
    assert payee is not None, "a merchant's account is opened with the merchant"
    payment = Payment(
        id=new_id("pay"),
        merchant_id=merchant.id,
        terminal_id=code.terminal_id,
        user_id=device.user_id,
        device_id=device.id,
        amount_minor=money.amount_minor,
        currency=money.currency,
        refunded_minor=0,
        status=PaymentStatus.SUCCEEDED,
        merchant_order_id=code.reference,
        code_version=CODE_VERSION_MPM,
        created_at_s=now_s,
    )
    try:
        with session.begin_nested():
            session.add(payment)
            session.flush()
    except IntegrityError as error:
        raise ApiError(ErrorCode.DUPLICATE_ORDER, "this QR's order is already paid") from error
    ledger.transfer(
        session,
        kind="charge",
        debit=payer,
        credit=payee,
        amount_minor=money.amount_minor,
        now_s=now_s,
        payment_id=payment.id,
    )
    told = payment_json(payment)
    notify = merchant.notify_url is not None
    events.record(session, told, events.SUCCEEDED, now_s, notify=notify)
    return told | {"merchant": merchant.name}
