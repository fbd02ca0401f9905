"""/v1/orders and /v1/collection-codes: what a till asks for to be paid by a consumer's scan.

Signed terminal requests, like /v1/charges (docs/api.md, "Orders"). The server, not the till,
issues every merchant QR payload, signed with its QR key (paycode.server.safety.qr_keys), so a
wallet can tell a real poster from a sticker pasted over it.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify

from paycode.server.charge import orders
from paycode.server.database.engine import db
from paycode.server.http.charges import signed_idempotent_post
from paycode.server.http.signed_requests import authenticate_terminal
from paycode.server.safety.qr_keys import load_qr_keys
from paycode.server.services import secret_box

bp = Blueprint("orders", __name__, url_prefix="/v1")


@bp.post("/orders")
def create_order() -> Response:
    keys = load_qr_keys(db.engine, secret_box())
    return signed_idempotent_post(
        lambda session, terminal, body, now_s: orders.create(session, terminal, body, now_s, keys)
    )


@bp.get("/orders/<order_id>")
def get_order(order_id: str) -> Response:
    now_s = time.time()
    keys = load_qr_keys(db.engine, secret_box())
    with db.transaction() as session:
        terminal = authenticate_terminal(session, now_s)
        order = orders.owned(session, terminal.merchant_id, order_id)
        reply = orders.order_json(session, order, keys, now_s)
    return jsonify(reply | {"server_time": now_s})


@bp.post("/orders/<order_id>/cancel")
def cancel_order(order_id: str) -> Response:
    keys = load_qr_keys(db.engine, secret_box())
    return signed_idempotent_post(
        lambda session, terminal, _body, now_s: orders.cancel(
            session, orders.owned(session, terminal.merchant_id, order_id), keys, now_s
        )
    )


@bp.post("/collection-codes")
def create_collection_code() -> Response:
    """A signed poster payload: static (the consumer types the amount) or with a fixed
    `amount` (paid any number of times); `"terminal": true` names the calling till."""
    keys = load_qr_keys(db.engine, secret_box())
    return signed_idempotent_post(
        lambda session, terminal, body, _now_s: orders.poster(session, terminal, body, keys)
    )
