"""A consumer pays a merchant's QR (EMV MPM) online, from the wallet (docs/spec.md, section 12).

The server trusts nothing in the payload it did not sign: the signature must verify under one
of its live QR keys, and the merchant fields must still match the merchant's rows. A dynamic
QR names an order by its token and the order row says what is paid; a static QR takes the
consumer's amount, a fixed-amount poster its signed amount. Every wallet payment obeys the
same password-free limits as a payment code: above them the request must carry the PIN, which
the HTTP layer has already checked (`pin_checked`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from paycode.server.books import ledger
from paycode.server.charge import orders
from paycode.server.charge.merchant_qr import collection_code_for
from paycode.server.charge.payment_rows import add_succeeded
from paycode.server.charge.planning import payment_json
from paycode.server.database.models import (
    Account,
    Device,
    Merchant,
    Order,
    Payment,
    Terminal,
    new_id,
)
from paycode.server.http.request_fields import string_field
from paycode.server.notifications import events
from paycode.server.safety.limits import (
    LimitSettings,
    UserLimits,
    account_limits,
    pinless_reason,
    within_pinless,
)
from paycode.server.safety.qr_keys import QrKeys
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.emv.collection import CollectionCode, read_collection
from paycode.shared.emv.qr_signature import Verdict, verify_signature
from paycode.shared.errors import AmountInvalid, ApiError, CodeMalformed
from paycode.shared.money import Money, format_amount, parse_amount

QR_PAYLOAD_CHARS_MAX = 512
ID_CHARS_MAX = 64
CODE_VERSION_MPM = "mpm"
"""What payments made from a collection QR show as their code version."""


@dataclass(frozen=True)
class PayRules:
    keys: QrKeys
    limits: LimitSettings
    pin_checked: bool
    """The request carried the user's PIN and it was right."""


def signed_collection(body: dict[str, Any], keys: QrKeys) -> CollectionCode:
    """The payload in `body`, read and its signature verified; qr_invalid otherwise."""
    payload = string_field(body, "qr_payload", max_chars=QR_PAYLOAD_CHARS_MAX)
    assert payload is not None
    try:
        code = read_collection(payload)
    except CodeMalformed as error:
        raise ApiError(
            ErrorCode.QR_INVALID, f"not a Paycode collection QR: {error.message}"
        ) from error
    verdict = verify_signature(code.signature, keys.public_keys)
    if verdict is not Verdict.VERIFIED:
        raise ApiError(ErrorCode.QR_INVALID, _REFUSALS[verdict])
    return code


_REFUSALS = {
    Verdict.UNSIGNED: "this QR is not signed by this server",
    Verdict.UNKNOWN_KEY: "this QR is signed with a key this server does not hold",
    Verdict.ALTERED: "this QR was changed after the server signed it",
}


def _merchant(session: Session, code: CollectionCode) -> Merchant:
    """The merchant the QR names, its printed fields still those of its rows."""
    merchant = session.get(Merchant, code.merchant_id[:ID_CHARS_MAX])
    if merchant is None:
        raise ApiError(ErrorCode.QR_INVALID, "this QR names a merchant the server does not know")
    expected = collection_code_for(merchant)
    printed = (code.merchant_name, code.merchant_city, code.local_name, code.local_city)
    if printed != (
        expected.merchant_name,
        expected.merchant_city,
        expected.local_name,
        expected.local_city,
    ):
        raise ApiError(ErrorCode.QR_INVALID, "this QR's merchant details are not the merchant's")
    if code.currency != merchant.currency:
        raise ApiError(ErrorCode.CURRENCY_MISMATCH, f"this merchant takes {merchant.currency}")
    if code.terminal_id is not None:
        terminal = session.get(Terminal, code.terminal_id[:ID_CHARS_MAX])
        if terminal is None or terminal.merchant_id != merchant.id or terminal.revoked_at_s:
            raise ApiError(ErrorCode.QR_INVALID, "this QR names a till that cannot take payments")
    return merchant


def _asked_amount(body: dict[str, Any], code: CollectionCode) -> Money | None:
    asked = body.get("amount")
    if asked is not None and not isinstance(asked, str):
        raise ApiError(
            ErrorCode.AMOUNT_INVALID, "'amount' must be a decimal string such as '12.50'"
        )
    try:
        return None if asked is None else parse_amount(asked, code.currency)
    except AmountInvalid as error:
        raise ApiError(ErrorCode.AMOUNT_INVALID, error.message) from error


def _amount(body: dict[str, Any], code: CollectionCode, fixed: Money | None) -> Money:
    """A fixed amount (an order's, a fixed-amount poster's) is the amount; a consumer's
    amount must equal it; a static QR needs the consumer's."""
    wanted = _asked_amount(body, code)
    if fixed is not None and wanted is not None and fixed != wanted:
        raise ApiError(
            ErrorCode.AMOUNT_INVALID, f"this QR fixes the amount at {format_amount(fixed)}"
        )
    amount = fixed or wanted
    if amount is None:
        raise ApiError(ErrorCode.AMOUNT_INVALID, "this QR has no amount: send 'amount'")
    return amount


def _fixed_amount(code: CollectionCode) -> Money | None:
    return None if code.amount is None else parse_amount(code.amount, code.currency)


def pay(
    session: Session, device: Device, body: dict[str, Any], now_s: float, rules: PayRules
) -> dict[str, Any]:
    """Move the money, or raise ApiError having moved nothing."""
    code = signed_collection(body, rules.keys)
    merchant = _merchant(session, code)
    order = None
    if code.order_token is not None:
        order = orders.open_order(session, code.order_token, merchant.id, now_s)
        money = _amount(body, code, Money(order.amount_minor, order.currency))
    else:
        money = _amount(body, code, _fixed_amount(code))
    payer = _locked_payer(session, device.user_id, money.currency)
    today = account_limits(rules.limits, payer, now_s)
    pinless = within_pinless(today, money.amount_minor)
    if not pinless and not rules.pin_checked:
        reason = pinless_reason(today, money.amount_minor)
        raise ApiError(ErrorCode.PIN_REQUIRED, f"{reason}: pay again with your PIN")
    reference = None if order is None else orders.payment_reference(session, order, now_s)
    payment = _insert_payment(
        session,
        device,
        merchant=merchant,
        code=code,
        order=order,
        money=money,
        now_s=now_s,
        reference=reference,
    )
    if order is not None:
        orders.mark_paid(session, order, payment.id, now_s)
    _move(session, payer, merchant=merchant, money=money, payment_id=payment.id, now_s=now_s)
    if pinless:
        _count_pinless(session, payer.id, today, money.amount_minor, rules.limits.day(now_s))
    told = payment_json(payment)
    events.record(session, told, events.SUCCEEDED, now_s, notify=merchant.notify_url is not None)
    return told | {"merchant": merchant.name}


def _locked_payer(session: Session, user_id: str, currency: str) -> Account:
    """The payer's account, locked (PostgreSQL) so that two payments cannot both pass the
    password-free limits; SQLite serialises writers anyway."""
    payer = session.scalars(
        select(Account)
        .where(
            Account.owner_kind == "user", Account.owner_id == user_id, Account.currency == currency
        )
        .with_for_update()
    ).first()
    if payer is None:
        raise ApiError(ErrorCode.CURRENCY_MISMATCH, f"you have no {currency} account")
    return payer


def _count_pinless(
    session: Session, payer_id: int, today: UserLimits, amount_minor: int, day: int
) -> None:
    """Today's password-free count and amount, as a code's charge counts them."""
    session.execute(
        update(Account)
        .where(Account.id == payer_id)
        .values(
            pinless_day=day,
            pinless_day_count=today.today_count + 1,
            pinless_day_minor=today.today_minor + amount_minor,
        )
    )


def _insert_payment(
    session: Session,
    device: Device,
    *,
    merchant: Merchant,
    code: CollectionCode,
    order: Order | None,
    money: Money,
    now_s: float,
    reference: str | None,
) -> Payment:
    payment = Payment(
        id=new_id("pay"),
        merchant_id=merchant.id,
        terminal_id=order.terminal_id if order is not None else code.terminal_id,
        user_id=device.user_id,
        device_id=device.id,
        amount_minor=money.amount_minor,
        currency=money.currency,
        refunded_minor=0,
        status=PaymentStatus.SUCCEEDED,
        merchant_order_id=reference,
        code_version=CODE_VERSION_MPM,
        created_at_s=now_s,
    )
    add_succeeded(session, payment, detail="this QR's order is already paid")
    return payment


def _move(
    session: Session,
    payer: Account,
    *,
    merchant: Merchant,
    money: Money,
    payment_id: str,
    now_s: float,
) -> None:
    payee = ledger.account(session, "merchant", merchant.id, money.currency)
    assert payee is not None, "a merchant's account is opened with the merchant"
    ledger.transfer(
        session,
        kind="charge",
        debit=payer,
        credit=payee,
        amount_minor=money.amount_minor,
        now_s=now_s,
        payment_id=payment_id,
    )
