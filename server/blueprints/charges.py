"""/v1/charges and /v1/payments: what a terminal (POS) calls. Every call is HMAC-signed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from server import charging, refunds
from server.auth import authenticate_terminal, secret_box
from server.db import db
from server.idempotency import require_key, respond, run_once
from server.models import Payment, Terminal
from server.problems import ApiError
from server.requests import json_object, request_sha256

bp = Blueprint("charges", __name__, url_prefix="/v1")

LIST_LIMIT_MAX = 100


TerminalAction = Callable[[Session, Terminal, dict[str, Any], float], tuple[int, dict[str, Any]]]


def _signed_idempotent_post(action: TerminalAction) -> Response:
    """Every terminal POST: signature, Idempotency-Key, JSON body, then `action` run once."""
    now_s = time.time()
    with db.transaction() as session:
        terminal = authenticate_terminal(session, now_s)
        key = require_key()
        body = json_object()
        status, reply, replayed = run_once(
            session,
            scope=f"terminal:{terminal.id}",
            key=key,
            request_hash=request_sha256(),
            now_s=now_s,
            work=lambda: action(session, terminal, body, now_s),
        )
    return respond(status, reply | {"server_time": now_s}, replayed)


@bp.post("/charges")
def create_charge() -> Response:
    return _signed_idempotent_post(
        lambda session, terminal, body, now_s: charging.charge(
            session, secret_box(), terminal, body, now_s
        )
    )


@bp.post("/payments/<payment_id>/refunds")
def create_refund(payment_id: str) -> Response:
    return _signed_idempotent_post(
        lambda session, terminal, body, now_s: refunds.refund(
            session, terminal, payment_id, body, now_s
        )
    )


@bp.get("/payments/<payment_id>")
def get_payment(payment_id: str) -> Response:
    now_s = time.time()
    with db.transaction() as session:
        terminal = authenticate_terminal(session, now_s)
        payment = refunds.owned_payment(session, terminal, payment_id)
        reply = charging.payment_json(payment)
    return jsonify(reply | {"server_time": now_s})


@bp.get("/payments")
def find_payments() -> Response:
    """Payments of this merchant with a given merchant_order_id (the merchant's own number)."""
    now_s = time.time()
    with db.transaction() as session:
        terminal = authenticate_terminal(session, now_s)
        order_id = request.args.get("merchant_order_id", "")
        if not order_id or len(order_id) > charging.ORDER_ID_CHARS_MAX:
            raise ApiError("invalid_request", "give ?merchant_order_id= (1-64 characters)")
        rows = session.scalars(
            select(Payment)
            .where(
                Payment.merchant_id == terminal.merchant_id, Payment.merchant_order_id == order_id
            )
            .order_by(Payment.created_at_s.desc())
            .limit(LIST_LIMIT_MAX)
        ).all()
        items = [charging.payment_json(row) for row in rows]
    return jsonify(items=items, server_time=now_s)
