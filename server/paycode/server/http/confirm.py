"""/v1/wallet: pending payments, confirm with the PIN or decline, the PIN itself, the limits.

Calls are signed by an enrolled device, like the rest of the wallet API (server/paycode/server/http/
wallet.py). A PIN is checked outside any transaction (scrypt is slow) and never stored in an
idempotency record: the key of a confirm is bound to its path, not to its body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy.orm import Session

from paycode.server.charge import step_up
from paycode.server.database.engine import db
from paycode.server.database.models import User
from paycode.server.http.idempotency import require_key, respond, run_once
from paycode.server.http.pin_check import PinBlocked, PinWrong, check_pin, pin_blocked, pin_wrong
from paycode.server.http.request_fields import json_object, string_field
from paycode.server.http.wallet import (
    authenticate_device,
    checked_password,
    password_blocked,
    stamp_problems,
)
from paycode.server.safety.guard import AttemptRefused
from paycode.server.safety.limits import limits_json, limits_of
from paycode.server.safety.passwords import PASSWORD_CHARS_MAX
from paycode.server.services import config
from paycode.server.wallets import sessions

bp = Blueprint("wallet_confirm", __name__, url_prefix="/v1/wallet")
bp.after_request(stamp_problems)
bp.register_error_handler(PinBlocked, pin_blocked)
bp.register_error_handler(PinWrong, pin_wrong)
bp.register_error_handler(AttemptRefused, password_blocked)


def _keyed_to_action(
    session: Session,
    *,
    device_id: str,
    key: str,
    action: str,
    now_s: float,
    work: Callable[[], tuple[int, dict[str, Any]]],
) -> Response:
    """`work` run once for the Idempotency-Key, the key bound to `action` (the operation and
    its payment), never to the body: the body may hold a PIN, whose hash must not be kept."""
    status, reply, replayed = run_once(
        session,
        scope=f"device:{device_id}",
        key=key,
        request_hash=hashlib.sha256(action.encode()).hexdigest(),
        now_s=now_s,
        work=work,
    )
    return respond(status, reply | {"server_time": now_s}, replayed)


@bp.get("/pending")
def pending() -> Response:
    now_s = sessions.now_s()
    with db.transaction() as session:
        device = authenticate_device(session, now_s)
        items = step_up.pending_for(session, device.user_id, now_s)
    return jsonify(items=items, server_time=now_s)


@bp.get("/limits")
def limits() -> Response:
    now_s = sessions.now_s()
    settings = config().limits
    with db.transaction() as session:
        device = authenticate_device(session, now_s)
        found = limits_of(session, device.user_id, settings, now_s)
    accounts = [limits_json(account) for account in found]
    return jsonify(accounts=accounts, server_time=now_s)


@bp.post("/payments/<payment_id>/confirm")
def confirm_payment(payment_id: str) -> Response:
    """Confirm with the PIN: the money moves now, or the reply says why it cannot."""
    now_s = sessions.now_s()
    key = require_key()
    pin = step_up.parse_pin(json_object().get("pin"))
    user_id, device_id = check_pin(pin, now_s)
    with db.transaction() as session:
        return _keyed_to_action(
            session,
            device_id=device_id,
            key=key,
            action=f"confirm {payment_id}",
            now_s=now_s,
            work=lambda: step_up.confirm(session, user_id, payment_id, now_s),
        )


@bp.post("/payments/<payment_id>/decline")
def decline_payment(payment_id: str) -> Response:
    """Say no: the payment ends declined, nothing moves, the code stays used."""
    now_s = sessions.now_s()
    with db.transaction() as session:
        device = authenticate_device(session, now_s)
        return _keyed_to_action(
            session,
            device_id=device.id,
            key=require_key(),
            action=f"decline {payment_id}",
            now_s=now_s,
            work=lambda: step_up.decline(session, device.user_id, payment_id, now_s),
        )


@bp.post("/pin")
def set_pin() -> Response:
    """Set or change the payment PIN; the account password proves it is the owner."""
    now_s = sessions.now_s()
    key = require_key()
    body = json_object()
    password = string_field(body, "password", max_chars=PASSWORD_CHARS_MAX)
    assert password is not None
    pin = step_up.parse_pin(body.get("pin"))
    with db.transaction() as session:
        device = authenticate_device(session, now_s)
        device_id = device.id
        found = _login_of(session, device.user_id)
        user_name = session.get(User, device.user_id).name  # type: ignore[union-attr]
    user_id = checked_password(user_name, now_s, found, password)
    with db.transaction() as session:

        def work() -> tuple[int, dict[str, Any]]:
            step_up.set_pin(session, user_id, pin)
            return 200, {"pin_set": True}

        return _keyed_to_action(
            session, device_id=device_id, key=key, action="pin", now_s=now_s, work=work
        )


def _login_of(session: Session, user_id: str) -> tuple[str, str] | None:
    user = session.get(User, user_id)
    return None if user is None else (user.id, user.password_hash)
