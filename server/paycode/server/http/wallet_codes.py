"""POST /v1/wallet/codes: a code issued online, for a phone that cannot make one itself
(docs/api.md, "Codes issued online"; docs/spec.md §14).

Signed by a live device of the user, idempotent, and with an optional PIN exactly as
/v1/wallet/payments takes it: checked before the transaction and never kept, and only a
checked PIN sets USER_VERIFIED. The idempotency record keeps where the code is (issuer, step,
counter), never the code: a retry rebuilds the same code from the issuer's sealed key.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response

from paycode.server.charge.step_up import parse_pin
from paycode.server.database.engine import db
from paycode.server.http.idempotency import require_key, respond, run_once
from paycode.server.http.pin_check import PinBlocked, PinWrong, check_pin, pin_blocked, pin_wrong
from paycode.server.http.problems import rate_limited
from paycode.server.http.request_fields import json_object
from paycode.server.http.wallet import code_keys, reenroll, stamp_problems
from paycode.server.http.wallet_payments import calling_device, hash_without_pin
from paycode.server.operations import lifecycle
from paycode.server.safety import keyring
from paycode.server.services import config, secret_box
from paycode.server.wallets import online_codes, sessions

bp = Blueprint("wallet_codes", __name__, url_prefix="/v1/wallet")
bp.after_request(stamp_problems)
bp.register_error_handler(PinBlocked, pin_blocked)
bp.register_error_handler(PinWrong, pin_wrong)


@bp.errorhandler(online_codes.IssueBoundReached)
def issue_bound_reached(error: online_codes.IssueBoundReached) -> Response:
    return rate_limited(error.wait_s, error.detail)


@bp.post("/codes")
def issue_code() -> Response:
    """One single-use code made by the server for the signing device's user (201); the
    Idempotency-Key makes a retry answer the same code."""
    now_s = sessions.now_s()
    key = require_key()
    body = json_object()
    pin = body.pop("pin", None)
    statuses = lifecycle.load_statuses(db.engine, time.monotonic(), config().statuses_ttl_s)
    wanted = online_codes.parse_request(body, statuses, pin_given=pin is not None)
    device_id = check_pin(parse_pin(pin), now_s)[1] if pin is not None else None
    box = secret_box()
    with db.transaction() as session:
        device = calling_device(session, device_id, now_s)
        status, reply, replayed = run_once(
            session,
            scope=f"device:{device.id}",
            key=key,
            request_hash=hash_without_pin(body),
            now_s=now_s,
            work=lambda: (201, online_codes.issue(session, device, wanted, box, now_s)),
        )
        if status == 201:
            _, current = keyring.load_keys(session, box)
            reply = online_codes.render(session, reply, box, current, now_s)
        advice = {**reenroll(device), **code_keys(session, device)} if status < 300 else {}
    return respond(status, reply | advice | {"server_time": now_s}, replayed)
