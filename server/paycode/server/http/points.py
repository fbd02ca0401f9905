"""Points mandates over HTTP (docs/api.md, "Points mandates"; docs/spec.md §16).

The wallet side (/v1/wallet/mandates) is signed by an enrolled device like every wallet call;
the merchant side (/v1/points) is signed by a terminal like /v1/charges. Every POST carries an
Idempotency-Key: a retried redemption pays once, a retried binding binds once. The logic lives
in paycode.server.points; this module authenticates and shapes answers.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify, request

from paycode.server.database.engine import db
from paycode.server.http.charges import signed_idempotent_post
from paycode.server.http.signed_requests import authenticate_terminal
from paycode.server.http.wallet import (
    authenticate_device,
    device_idempotent_post,
    stamp_problems,
)
from paycode.server.points import mandates, redemption
from paycode.server.services import config, secret_box
from paycode.server.wallets import devices, sessions
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError
from paycode.shared.points import REFERENCE_CHARS_MAX

wallet_bp = Blueprint("wallet_mandates", __name__, url_prefix="/v1/wallet")
wallet_bp.after_request(stamp_problems)
merchant_bp = Blueprint("points", __name__, url_prefix="/v1/points")


def _day(now_s: float) -> int:
    """Caps count per day of the settlement's calendar (PAYCODE_LIMIT_DAY_OFFSET_MINUTES)."""
    return config().limits.day(now_s)


@wallet_bp.post("/mandates")
def bind_mandate() -> Response:
    """Bind a merchant: the consent fields and the device's signature over them."""
    return device_idempotent_post(
        lambda session, device, body, now_s: (
            201,
            mandates.bind(
                session,
                device,
                body,
                device_key=devices.device_verify_key(device, secret_box()),
                now_s=now_s,
                day=_day(now_s),
            ),
        )
    )


@wallet_bp.get("/mandates")
def list_mandates() -> Response:
    """The user's mandates, revoked and expired ones too, newest first."""
    now_s = sessions.now_s()
    with db.transaction() as session:
        device = authenticate_device(session, now_s)
        items = mandates.user_mandates(session, device.user_id, now_s=now_s, day=_day(now_s))
    return jsonify(items=items, server_time=now_s)


@wallet_bp.post("/mandates/<mandate_id>/revoke")
def revoke_mandate(mandate_id: str) -> Response:
    """Revoke at once: from its commit on, no deduction passes (docs/spec.md §16)."""
    return device_idempotent_post(
        lambda session, device, _body, now_s: (
            200,
            mandates.revoke(session, device.user_id, mandate_id, now_s=now_s, day=_day(now_s)),
        )
    )


@merchant_bp.get("/mandates")
def merchant_mandates() -> Response:
    """This terminal's merchant's live mandates: how it learns a mandate id; ?reference=
    keeps those of one customer number."""
    now_s = time.time()
    with db.transaction() as session:
        terminal = authenticate_terminal(session, now_s)
        reference = request.args.get("reference")
        if reference is not None and len(reference) > REFERENCE_CHARS_MAX:
            raise ApiError(
                ErrorCode.INVALID_REQUEST,
                f"'reference' is at most {REFERENCE_CHARS_MAX} characters",
            )
        items = mandates.merchant_mandates(
            session, terminal.merchant_id, now_s=now_s, day=_day(now_s), reference=reference
        )
    return jsonify(items=items, server_time=now_s)


@merchant_bp.post("/redemptions")
def redeem_points() -> Response:
    """Deduct points under a mandate, and money for the rest of the amount, atomically."""
    return signed_idempotent_post(
        lambda session, terminal, body, now_s: redemption.redeem(
            session,
            terminal.merchant_id,
            terminal.terminal_id,
            body,
            now_s=now_s,
            day=_day(now_s),
        )
    )
