"""An offline (v4) code charged by a till that is online (docs/offline.md §6.1, last paragraph).

Settlement's checks (steps 4 to 9) in one transaction, but the server is there to say no, so
it refuses instead of paying short: `code_replayed` when the code's (certificate, counter) has
any acceptance, `certificate_returned`, `offline_blocked`, `insufficient_funds` when escrow
cannot pay the whole amount. A paid code is an acceptance row (seq NULL, id = the payment id)
claiming its (merchant, certificate, counter) like any till's, so the same code forwarded
later by an offline till is a duplicate, never a second payment. The reply is the payment's,
as for any charge. Device versions go through paycode.server.charge.planning instead: a v4
code names no device.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.books.escrow import locked_escrow
from paycode.server.books.offline_settlement import order_paid, pay_from_escrow
from paycode.server.books.offline_verify import Invalid, verify_code
from paycode.server.charge.planning import CODE_CHARS_MAX, ORDER_ID_CHARS_MAX, payment_json
from paycode.server.database.directory import TerminalCredential
from paycode.server.database.models import Merchant, User, new_id
from paycode.server.database.offline_models import OfflineAcceptance
from paycode.server.http.request_fields import money_fields, string_field
from paycode.server.safety.offline_keys import OfflineKeys
from paycode.server.safety.offline_settings import OfflineSettings
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError, CodeMalformed
from paycode.shared.money import Money, format_amount
from paycode.shared.versions import v4_offline

INVALID_DETAIL = "offline code is not genuine here: show a fresh one"


def charge_offline_code(
    session: Session,
    terminal: TerminalCredential,
    body: dict[str, Any],
    *,
    keys: OfflineKeys,
    settings: OfflineSettings,
    now_s: float,
) -> tuple[int, dict[str, Any]]:
    """(201, the payment) or raises ApiError; runs inside the charge's idempotency savepoint,
    so a refusal is stored as its reply and moves nothing."""
    text = string_field(body, "code", max_chars=CODE_CHARS_MAX)
    assert text is not None
    money = money_fields(body)
    order_id = string_field(body, "merchant_order_id", max_chars=ORDER_ID_CHARS_MAX, required=False)
    if money.currency != terminal.currency:
        raise ApiError(ErrorCode.CURRENCY_MISMATCH, f"this merchant takes {terminal.currency}")
    try:
        code = v4_offline.parse(text.strip())
    except CodeMalformed as error:
        raise ApiError(ErrorCode.CODE_MALFORMED, error.message) from error
    merchant = session.get(Merchant, terminal.merchant_id)
    assert merchant is not None, "a terminal belongs to a merchant"
    verified = verify_code(
        session,
        code,
        amount_minor=money.amount_minor,
        currency=money.currency,
        merchant=merchant,
        terminal_id=terminal.terminal_id,
        keys=keys,
        settings=settings,
        at_s=now_s,
        server_now_s=now_s,
    )
    if isinstance(verified, Invalid):
        if verified.over_limit_minor is not None:
            # Genuine, but above what one offline payment may be (its caps, the merchant's
            # floor): a fresh code would be refused the same, so do not ask for one.
            most = format_amount(Money(verified.over_limit_minor, money.currency))
            raise ApiError(
                ErrorCode.LIMIT_EXCEEDED,
                f"an offline code pays at most {most} {money.currency} here: pay another way",
            )
        raise ApiError(ErrorCode.CODE_INVALID, INVALID_DETAIL)
    allowance, certificate = verified.allowance, verified.certificate
    user = session.get(User, allowance.user_id)
    assert user is not None
    if user.offline_blocked_at_s is not None:
        raise ApiError(ErrorCode.OFFLINE_BLOCKED, "offline payments are blocked for this customer")
    if certificate.denied_at_s is not None or certificate.returned_counter is not None:
        raise ApiError(
            ErrorCode.CERTIFICATE_RETURNED, "this offline code's allowance was handed back"
        )
    if order_paid(session, merchant.id, order_id):
        raise ApiError(
            ErrorCode.DUPLICATE_ORDER, "this merchant_order_id already has a successful payment"
        )
    # Locked before the replay check: two charges of one code, at any merchants, meet here.
    escrow = locked_escrow(session, allowance)
    used = session.scalar(
        select(func.count()).where(
            OfflineAcceptance.cert_id == certificate.cert_id,
            OfflineAcceptance.counter == verified.counter,
        )
    )
    if used:
        raise ApiError(ErrorCode.CODE_REPLAYED, "this code was already used; ask for a fresh one")
    if escrow.balance_minor < money.amount_minor:
        raise ApiError(ErrorCode.INSUFFICIENT_FUNDS, "the offline allowance does not cover it")
    payment_id = new_id("pay")
    claim = OfflineAcceptance(
        terminal_id=terminal.terminal_id,
        id=payment_id,
        merchant_id=merchant.id,
        seq=None,
        allowance_id=allowance.id,
        cert_id=certificate.cert_id,
        counter=verified.counter,
        amount_minor=money.amount_minor,
        currency=money.currency,
        merchant_order_id=order_id,
        at_s=now_s,
        arrived_at_s=now_s,
        result="paid",
        paid_minor=money.amount_minor,
        loss_minor=0,
        payment_id=payment_id,
    )
    try:
        with session.begin_nested():
            session.add(claim)
    except IntegrityError as error:
        raise ApiError(ErrorCode.CODE_REPLAYED, "this code was already used") from error
    payment = pay_from_escrow(
        session,
        verified,
        escrow,
        payment_id=payment_id,
        amount_minor=money.amount_minor,
        merchant_id=merchant.id,
        terminal_id=terminal.terminal_id,
        merchant_order_id=order_id,
        now_s=now_s,
    )
    return 201, payment_json(payment)
