"""A charge, inside one database transaction: verify, claim, then move the money.

    verify (shared.verify) -> claim (UNIQUE insert) -> drift -> debit/credit (ledger) -> payment

The claim is made as soon as the code proves genuine and stays even when the payment then
fails (insufficient funds, currency), so a code is never spendable twice, across workers and
hosts. Verification failures claim nothing and move nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import ledger
from server.keyring import load_keys
from server.models import Claim, Device, Merchant, Payment, Terminal, new_id
from server.problems import ApiError, problem_body
from server.requests import money_fields, string_field
from server.secretbox import SecretBox
from shared.errors import CodeMalformed
from shared.money import Money, format_amount
from shared.timestep import STEP_SECONDS
from shared.verify import verify_code
from shared.versions.base import Accepted, DeviceRecord, VerifyContext, Window

DRIFT_STEPS_MAX = 10
"""A device clock followed up to 5 minutes off; further off, its codes expire (re-sync)."""
CLAIM_STEPS_KEPT = Window().steps_ahead + DRIFT_STEPS_MAX + 2
"""A claim outlives every moment its code could still verify; then the worker purges it."""
CODE_CHARS_MAX = 512
ORDER_ID_CHARS_MAX = 64


@dataclass
class DeviceFinder:
    """The verifier's O(1) lookup: one indexed SELECT by (version, handle), key unsealed."""

    session: Session
    box: SecretBox
    rows: dict[str, Device] = field(default_factory=dict)

    def __call__(self, version: str, handle: bytes) -> DeviceRecord | None:
        row = self.session.scalars(
            select(Device).where(Device.version == version, Device.handle == handle)
        ).one_or_none()
        if row is None:
            return None
        self.rows[row.id] = row
        if row.key_sealed is not None and row.key_id is not None:
            key = self.box.open(row.key_id, row.key_sealed, row_id=row.id)
        else:
            assert row.public_key is not None
            key = row.public_key
        return DeviceRecord(row.id, row.handle, key, row.drift_steps, row.revoked_at_s is not None)


def iso_time(unix_s: float) -> str:
    return (
        dt.datetime.fromtimestamp(unix_s, dt.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def payment_json(payment: Payment) -> dict[str, Any]:
    money = Money(payment.amount_minor, payment.currency)
    refunded = Money(payment.refunded_minor, payment.currency)
    return {
        "payment_id": payment.id,
        "status": payment.status,
        "amount": format_amount(money),
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "refunded": format_amount(refunded),
        "refunded_minor": payment.refunded_minor,
        "merchant_id": payment.merchant_id,
        "merchant_order_id": payment.merchant_order_id,
        "code_version": payment.code_version,
        "failure_code": payment.failure_code,
        "created_at": iso_time(payment.created_at_s),
    }


def _verify(session: Session, box: SecretBox, code: str, now_s: float) -> tuple[Accepted, Device]:
    keys, _ = load_keys(session, box)
    finder = DeviceFinder(session, box)
    try:
        result = verify_code(code, VerifyContext(now_s, finder, keys))
    except CodeMalformed as error:
        raise ApiError("code_malformed", error.message) from error
    if not isinstance(result, Accepted):
        raise ApiError(result.reason.value, result.detail)
    return result, finder.rows[result.device.device_id]


def _claim(session: Session, accepted: Accepted) -> None:
    expires_at_s = float((accepted.step + 1 + CLAIM_STEPS_KEPT) * STEP_SECONDS)
    claim = Claim(
        claim_key=accepted.claim_key.decode(),
        device_id=accepted.device.device_id,
        expires_at_s=expires_at_s,
    )
    try:
        with session.begin_nested():
            session.add(claim)
    except IntegrityError as error:
        raise ApiError(
            "code_replayed", "this code was already used; ask for a fresh one"
        ) from error


def _learn_drift(device: Device, accepted: Accepted) -> None:
    """A code shown one step after it was made is ordinary latency, not a slow clock: learning
    -1 from it would stretch that device's window past 60 s. Anything else moves the drift."""
    if accepted.drift_steps == device.drift_steps - 1:
        return
    device.drift_steps = max(-DRIFT_STEPS_MAX, min(DRIFT_STEPS_MAX, accepted.drift_steps))


def charge(
    session: Session, box: SecretBox, terminal: Terminal, body: dict[str, Any], now_s: float
) -> tuple[int, dict[str, Any]]:
    """Run one charge. Raises ApiError before the claim; returns a failure body after it."""
    code = string_field(body, "code", max_chars=CODE_CHARS_MAX)
    assert code is not None
    money = money_fields(body)
    order_id = string_field(body, "merchant_order_id", max_chars=ORDER_ID_CHARS_MAX, required=False)
    merchant = session.get(Merchant, terminal.merchant_id)
    assert merchant is not None
    if money.currency != merchant.currency:
        raise ApiError("currency_mismatch", f"this merchant takes {merchant.currency}")
    accepted, device = _verify(session, box, code.strip(), now_s)
    _claim(session, accepted)
    _learn_drift(device, accepted)
    payment = Payment(
        id=new_id("pay"),
        merchant_id=merchant.id,
        terminal_id=terminal.id,
        user_id=device.user_id,
        device_id=device.id,
        amount_minor=money.amount_minor,
        currency=money.currency,
        refunded_minor=0,
        status="succeeded",
        merchant_order_id=order_id,
        code_version=accepted.version,
        created_at_s=now_s,
    )
    try:
        with session.begin_nested():
            _move_money(session, payment, merchant, now_s)
    except ApiError as error:
        payment.status, payment.failure_code = "failed", error.code
        session.add(payment)
        return error.status, problem_body(error.code, error.message, error.status) | {
            "payment_id": payment.id
        }
    reply = payment_json(payment)
    if accepted.deprecated:
        reply["notice"] = f"code version {accepted.version} is deprecated"
    return 201, reply


def _move_money(session: Session, payment: Payment, merchant: Merchant, now_s: float) -> None:
    payer = ledger.account(session, "user", payment.user_id or "", payment.currency)
    payee = ledger.account(session, "merchant", merchant.id, payment.currency)
    if payer is None:
        raise ApiError("currency_mismatch", f"the customer has no {payment.currency} account")
    assert payee is not None, "a merchant's account is opened with the merchant"
    ledger.transfer(
        session,
        kind="charge",
        debit=payer,
        credit=payee,
        amount_minor=payment.amount_minor,
        now_s=now_s,
        payment_id=payment.id,
    )
    session.add(payment)
    try:
        session.flush()
    except IntegrityError as error:
        raise ApiError(
            "duplicate_order", "this merchant_order_id already has a successful payment"
        ) from error
