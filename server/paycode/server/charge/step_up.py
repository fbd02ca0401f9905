"""Step-up confirmation: a payment above the password-free limits (paycode.server.safety.limits)
waits in
`pending_confirmation` until the customer confirms it with the PIN, declines it, the POS
cancels it, or its deadline passes.

    pending_confirmation -> succeeded            (confirm: the money moves now)
                         -> failed               (confirm, but funds or the order say no)
                         -> declined             (the customer said no)
                         -> cancelled            (the POS gave up, or the deadline passed)

Every transition is a conditional UPDATE on `status = 'pending_confirmation'`, so a confirm and
a cancel racing each other cannot both win; the money moves in the same transaction as the
winning confirm. Only the confirm debits; any other end moves nothing, and the code that made
the payment stays burned.

Functions here that run under an Idempotency-Key return (status, body) for every outcome
instead of raising, so a failed confirm still records why (server/idempotency.run_once rolls
back a raised error's changes).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.books import ledger
from paycode.server.charge.planning import payment_json
from paycode.server.database.models import Merchant, Payment, User
from paycode.server.http.problems import problem_reply
from paycode.server.notifications import events
from paycode.server.safety.guard import (
    AttemptRefused,
    GuardScopes,
    GuardSettings,
    release_attempt,
    reserve_attempt,
    settle_wrong,
)
from paycode.server.safety.passwords import hash_password, verify_password
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.credentials import pin_problem
from paycode.shared.errors import ApiError

PIN_DIGITS = 6
PIN_FAILURES_MAX = 5
PIN_GUARD = GuardSettings(window_s=900.0, backoff_base_s=300.0, backoff_max_s=86_400.0)
"""Five wrong PINs in 15 minutes block confirmations for 5 minutes, then 10, 20 ... a day."""
PENDING_LIST_MAX = 20
EXPIRE_BATCH_ROWS = 1000

Reply = tuple[int, dict[str, Any]]


# -- the customer's PIN ---------------------------------------------------------------------


def parse_pin(value: object) -> str:
    if not isinstance(value, str) or len(value) != PIN_DIGITS or not value.isascii():
        raise ApiError(ErrorCode.INVALID_REQUEST, f"'pin' must be {PIN_DIGITS} digits")
    if not value.isdigit():
        raise ApiError(ErrorCode.INVALID_REQUEST, f"'pin' must be {PIN_DIGITS} digits")
    return value


def pin_scopes(user_id: str) -> GuardScopes:
    return GuardScopes((f"pin:{user_id}",), (PIN_FAILURES_MAX,))


def stored_pin(session: Session, user_id: str) -> str | None:
    return session.scalar(select(User.pin_hash).where(User.id == user_id))


def pin_matches(stored: str | None, pin: str) -> bool:
    """Checked outside any transaction: scrypt takes tens of milliseconds."""
    if stored is None:
        raise ApiError(
            ErrorCode.PIN_NOT_SET, "no payment PIN yet: set one with 'paycode-wallet set-pin'"
        )
    return verify_password(pin, stored)


def reserve_pin_attempt(session: Session, user_id: str, now_s: float) -> None:
    """Take one of the user's PIN attempts before the PIN is checked, or raise AttemptRefused
    (the caller's transaction rolls back): concurrent requests cannot check more than the
    limit (paycode.server.safety.guard.reserve_attempt)."""
    wait_s = reserve_attempt(session.connection(), pin_scopes(user_id), PIN_GUARD, now_s)
    if wait_s is not None:
        raise AttemptRefused(wait_s)


def settle_pin_attempt(session: Session, user_id: str, now_s: float, *, right: bool) -> None:
    """After the check: a right PIN gives its attempt back, a wrong one keeps it."""
    if right:
        release_attempt(session.connection(), pin_scopes(user_id))
    else:
        settle_wrong(session.connection(), pin_scopes(user_id), PIN_GUARD, now_s)


def set_pin(session: Session, user_id: str, pin: str) -> None:
    """A new PIN must not be one an attacker tries first (paycode.shared.credentials); a PIN
    set before that rule still confirms."""
    problem = pin_problem(pin)
    if problem is not None:
        raise ApiError(ErrorCode.INVALID_REQUEST, problem)
    session.execute(update(User).where(User.id == user_id).values(pin_hash=hash_password(pin)))


# -- transitions ----------------------------------------------------------------------------


def _transition(session: Session, payment_id: str, status: str, failure_code: str | None) -> bool:
    """Move a pending payment on; False when something else moved it first."""
    result = session.execute(
        update(Payment)
        .where(Payment.id == payment_id, Payment.status == PaymentStatus.PENDING_CONFIRMATION)
        .values(status=status, failure_code=failure_code),
        execution_options={"synchronize_session": False},
    )
    return result.rowcount == 1  # type: ignore[attr-defined, no-any-return]


def _current(session: Session, payment_id: str) -> Payment:
    payment = session.get(Payment, payment_id, populate_existing=True)
    assert payment is not None
    return payment


def _customers(session: Session, user_id: str, payment_id: str) -> Payment | None:
    payment = session.get(Payment, payment_id[:64])
    return payment if payment is not None and payment.user_id == user_id else None


def _not_pending(payment: Payment) -> Reply:
    detail = f"this payment is {payment.status.replace('_', ' ')}; nothing to confirm"
    return problem_reply(ErrorCode.PAYMENT_NOT_PENDING, detail, payment=payment_json(payment))


def confirm(session: Session, user_id: str, payment_id: str, now_s: float) -> Reply:
    """The customer (PIN already checked) says yes: debit now, or record why not."""
    payment = _customers(session, user_id, payment_id)
    if payment is None:
        return problem_reply(ErrorCode.NOT_FOUND, "no such payment for you")
    if payment.status != PaymentStatus.PENDING_CONFIRMATION:
        return _not_pending(payment)
    assert payment.confirm_by_s is not None, "a pending payment has a deadline"
    if payment.confirm_by_s < now_s:
        moved = _transition(
            session, payment.id, PaymentStatus.CANCELLED, ErrorCode.CONFIRMATION_EXPIRED
        )
        detail = "the time to confirm has passed; the shop must charge a new code"
        expired = _told(session, payment.id, now_s, moved)
        return problem_reply(ErrorCode.CONFIRMATION_EXPIRED, detail, payment=expired)
    failure = _pay_pending(session, payment, now_s)
    if failure is not None:
        return failure
    return 200, _told(session, payment.id, now_s, moved=True)


def _told(session: Session, payment_id: str, now_s: float, moved: bool) -> dict[str, Any]:
    """The payment as it now stands; when this call `moved` it on, the merchant's notification
    of its new status is written too (paycode.server.notifications.events), in this transaction."""
    payment = payment_json(_current(session, payment_id))
    if moved:
        events.record_status(session, payment, now_s)
    return payment


def _pay_pending(session: Session, payment: Payment, now_s: float) -> Reply | None:
    """Mark the payment succeeded and move the money, together or not at all."""
    code: str
    try:
        with session.begin_nested():
            if not _transition(session, payment.id, PaymentStatus.SUCCEEDED, None):
                return _not_pending(_current(session, payment.id))
            _move_money(session, payment, now_s)
    except IntegrityError:
        code, detail = ErrorCode.DUPLICATE_ORDER, "this order was paid meanwhile by another payment"
    except ApiError as error:  # insufficient_funds, currency_mismatch from the ledger
        code, detail = error.code, error.message
    else:
        return None
    if _transition(session, payment.id, PaymentStatus.FAILED, code):
        _told(session, payment.id, now_s, moved=True)
    return problem_reply(code, detail, payment_id=payment.id)


def _move_money(session: Session, payment: Payment, now_s: float) -> None:
    assert payment.user_id is not None
    payer = ledger.account(session, "user", payment.user_id, payment.currency)
    payee = ledger.account(session, "merchant", payment.merchant_id, payment.currency)
    if payer is None or payee is None:
        raise ApiError(ErrorCode.CURRENCY_MISMATCH, "the customer has no account in this currency")
    ledger.transfer(
        session,
        kind="charge",
        debit=payer,
        credit=payee,
        amount_minor=payment.amount_minor,
        now_s=now_s,
        payment_id=payment.id,
    )


def decline(session: Session, user_id: str, payment_id: str, now_s: float) -> Reply:
    payment = _customers(session, user_id, payment_id)
    if payment is None:
        return problem_reply(ErrorCode.NOT_FOUND, "no such payment for you")
    if not _transition(session, payment.id, PaymentStatus.DECLINED, ErrorCode.DECLINED_BY_CUSTOMER):
        return _not_pending(_current(session, payment.id))
    return 200, _told(session, payment.id, now_s, moved=True)


def cancel(session: Session, payment: Payment, now_s: float) -> Reply:
    """The POS gives up waiting. Answers the payment as it now is: cancelled, or whatever
    the customer made of it first (a confirm that won the race is `succeeded`)."""
    moved = _transition(
        session, payment.id, PaymentStatus.CANCELLED, ErrorCode.CANCELLED_BY_MERCHANT
    )
    return 200, _told(session, payment.id, now_s, moved)


def expire_stale(session: Session, now_s: float) -> int:
    """Cancel pending payments past their deadline (the worker's sweep); how many. Each one
    cancelled here is told to its merchant in the same transaction."""
    stale = (
        select(Payment.id)
        .where(Payment.status == PaymentStatus.PENDING_CONFIRMATION, Payment.confirm_by_s < now_s)
        .limit(EXPIRE_BATCH_ROWS)
    )
    expired = session.scalars(
        update(Payment)
        .where(Payment.id.in_(stale), Payment.status == PaymentStatus.PENDING_CONFIRMATION)
        .values(status=PaymentStatus.CANCELLED, failure_code=ErrorCode.CONFIRMATION_EXPIRED)
        .returning(Payment.id),
        execution_options={"synchronize_session": False},
    ).all()
    if expired:
        told = session.scalars(
            select(Payment)
            .join(Merchant, Merchant.id == Payment.merchant_id)
            .where(Payment.id.in_(expired), Merchant.notify_url.is_not(None))
            .execution_options(populate_existing=True)
        )
        for payment in told:
            events.record(session, payment_json(payment), events.CANCELLED, now_s, notify=True)
    return len(expired)


def pending_for(session: Session, user_id: str, now_s: float) -> list[dict[str, Any]]:
    """What this customer may still confirm, newest first, with the shop's name."""
    rows = session.execute(
        select(Payment, Merchant.name)
        .join(Merchant, Merchant.id == Payment.merchant_id)
        .where(
            Payment.user_id == user_id,
            Payment.status == PaymentStatus.PENDING_CONFIRMATION,
            Payment.confirm_by_s >= now_s,
        )
        .order_by(Payment.created_at_s.desc())
        .limit(PENDING_LIST_MAX)
    ).all()
    return [payment_json(payment) | {"merchant": name} for payment, name in rows]
