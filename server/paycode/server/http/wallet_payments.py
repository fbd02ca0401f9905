"""/v1/wallet/payments and /v1/wallet/qr-keys: a consumer pays a merchant's QR from the wallet.

The payload must carry this server's signature (paycode.server.charge.collection); the wallet
learns the public keys at enrollment and from GET /v1/wallet/qr-keys, to show "verified"
offline before anything is paid. Above the password-free limits the request carries the PIN,
checked before the transaction and never kept: the Idempotency-Key is bound to the body
without it.
"""

from __future__ import annotations

import hashlib
import json

from flask import Blueprint, Response, jsonify
from sqlalchemy.orm import Session

from paycode.server.charge import collection
from paycode.server.charge.step_up import parse_pin
from paycode.server.database.engine import db
from paycode.server.database.models import Device
from paycode.server.http.idempotency import require_key, respond, run_once
from paycode.server.http.pin_check import PinBlocked, PinWrong, check_pin, pin_blocked, pin_wrong
from paycode.server.http.request_fields import json_object
from paycode.server.http.wallet import authenticate_device, code_keys, reenroll, stamp_problems
from paycode.server.safety.qr_keys import load_qr_keys
from paycode.server.services import config, secret_box
from paycode.server.wallets import sessions

bp = Blueprint("wallet_payments", __name__, url_prefix="/v1/wallet")
bp.after_request(stamp_problems)
bp.register_error_handler(PinBlocked, pin_blocked)
bp.register_error_handler(PinWrong, pin_wrong)


@bp.post("/payments")
def pay_merchant() -> Response:
    """Pay a merchant's QR; the Idempotency-Key makes a retry pay once."""
    now_s = sessions.now_s()
    key = require_key()
    body = json_object()
    pin = body.pop("pin", None)
    device_id = check_pin(parse_pin(pin), now_s)[1] if pin is not None else None
    keys = load_qr_keys(db.engine, secret_box())
    rules = collection.PayRules(keys, config().limits, pin_checked=device_id is not None)
    with db.transaction() as session:
        device = calling_device(session, device_id, now_s)
        status, reply, replayed = run_once(
            session,
            scope=f"device:{device.id}",
            key=key,
            request_hash=hash_without_pin(body),
            now_s=now_s,
            work=lambda: (201, collection.pay(session, device, body, now_s, rules)),
        )
        advice = {**reenroll(device), **code_keys(session, device)} if status < 300 else {}
    return respond(status, reply | advice | {"server_time": now_s}, replayed)


def calling_device(session: Session, pin_device_id: str | None, now_s: float) -> Device:
    """The device that calls: the one check_pin found with the PIN (a request carrying the
    PIN is checked by it, not by a signature), else the one that signed the request."""
    if pin_device_id is None:
        return authenticate_device(session, now_s)
    found = session.get(Device, pin_device_id)
    assert found is not None, "check_pin authenticated it"
    return found


def hash_without_pin(body: dict[str, object]) -> str:
    """A retry with or without the PIN is the same payment; a PIN's hash is never kept."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@bp.get("/qr-keys")
def qr_keys() -> Response:
    """The public keys that verify this server's merchant QR payloads (newest first)."""
    now_s = sessions.now_s()
    with db.transaction() as session:
        authenticate_device(session, now_s)
    keys = load_qr_keys(db.engine, secret_box())
    return jsonify(keys=keys.public_json(), server_time=now_s)
