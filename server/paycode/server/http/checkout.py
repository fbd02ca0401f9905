"""Hosted checkout: POST /v1/checkouts (a web shop, signed like a till) and the page the
customer is sent to, /pay/<token> (docs/api.md, "Hosted checkout"; docs/spec.md, section 15).

The page is rendered here, from the merchant's and the order's rows, so "verified" on it means
what it says: Paycode itself shows who is paid. It loads nothing from anywhere else (its CSP
allows only this origin, no inline script or style); its QR is an inline SVG drawn on the
server from the signed payload. Its status is polled, not pushed: a long-lived event stream
would hold one of the few threads of a worker for every open page, and charges need them.
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import qrcode
import qrcode.constants
from flask import Blueprint, Response, jsonify, render_template, request
from sqlalchemy.orm import Session

from paycode.server.charge import checkout, orders
from paycode.server.database.engine import db
from paycode.server.database.models import Merchant, Order
from paycode.server.http.charges import signed_idempotent_post
from paycode.server.http.signed_requests import authenticate_terminal
from paycode.server.safety.qr_keys import QrKeys, load_qr_keys
from paycode.server.services import config, secret_box
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError
from paycode.shared.money import Money, format_amount
from paycode.shared.timestamps import iso_time

api = Blueprint("checkouts", __name__, url_prefix="/v1")
page = Blueprint(
    "checkout_page",
    __name__,
    url_prefix="/pay",
    template_folder="../templates",
    static_folder="../static/checkout",
    static_url_path="/static",
)

POLL_INTERVAL_MS = 2000
QR_BORDER_MODULES = 4
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@page.after_request
def _harden(response: Response) -> Response:
    response.headers.update(PAGE_HEADERS)
    return response


@api.post("/checkouts")
def create_checkout() -> Response:
    keys = load_qr_keys(db.engine, secret_box())
    site_url = config().public_url or request.url_root
    return signed_idempotent_post(
        lambda session, terminal, body, now_s: checkout.create(
            session, terminal, body, now_s, keys, site_url=site_url
        )
    )


@api.get("/qr-keys")
def qr_keys() -> Response:
    """The public keys that verify a signed return (and this server's merchant QR payloads),
    newest first, for a shop that verifies its customers' returns."""
    now_s = time.time()
    with db.transaction() as session:
        authenticate_terminal(session, now_s)
    keys = load_qr_keys(db.engine, secret_box())
    return jsonify(keys=keys.public_json(), server_time=now_s)


@dataclass(frozen=True)
class QrDrawing:
    """A QR as the page's inline SVG draws it: `size` modules square (quiet zone included),
    `path` one unit square per dark module."""

    size: int
    path: str


def qr_drawing(payload: str) -> QrDrawing:
    """The QR of `payload` at error correction M (what the wallets show on screen too), with a
    quiet zone of four modules."""
    code = qrcode.QRCode(
        error_correction=qrcode.constants.ERROR_CORRECT_M, border=QR_BORDER_MODULES
    )
    code.add_data(payload)
    code.make(fit=True)
    matrix = code.get_matrix()
    squares = (
        f"M{x} {y}h1v1h-1z" for y, row in enumerate(matrix) for x, dark in enumerate(row) if dark
    )
    return QrDrawing(len(matrix), "".join(squares))


def _page_fields(
    session: Session, order: Order, merchant: Merchant, keys: QrKeys, now_s: float
) -> dict[str, Any]:
    payload = orders.order_payload(session, order, keys)
    state = orders.status_of(order, now_s)
    return {
        "merchant_name": merchant.name,
        "merchant_city": merchant.city,
        "amount": format_amount(Money(order.amount_minor, order.currency)),
        "currency": order.currency,
        "merchant_order_id": order.merchant_order_id,
        "status": state,
        "order_token": order.token,
        "paid_count": order.paid_count,
        "payments_max": order.payments_max,
        "qr": qr_drawing(payload) if state == orders.OPEN else None,
        "wallet_href": "/wallet/#pay=" + urllib.parse.quote(payload, safe=""),
        "return_to": checkout.signed_return(session, order, keys, now_s),
        "expires_at": iso_time(order.expires_at_s),
        "expires_at_text": iso_time(order.expires_at_s).replace("T", " ")[:16] + " UTC",
        "poll_ms": POLL_INTERVAL_MS,
    }


@page.get("/<token>")
def pay_page(token: str) -> tuple[str, int]:
    """The customer's page; an unknown token is a plain "not found" page, the same for a
    token that never existed and for a till's order."""
    now_s = time.time()
    keys = load_qr_keys(db.engine, secret_box())
    with db.transaction() as session:
        order = checkout.by_token(session, token)
        merchant = None if order is None else session.get(Merchant, order.merchant_id)
        if order is None or merchant is None:
            return render_template("checkout/not_found.html"), 404
        fields = _page_fields(session, order, merchant, keys, now_s)
    return render_template("checkout/pay.html", **fields), 200


@page.get("/<token>/status")
def pay_status(token: str) -> Response:
    """What the page polls (Cache-Control: no-store, like the page)."""
    now_s = time.time()
    keys = load_qr_keys(db.engine, secret_box())
    with db.transaction() as session:
        order = checkout.by_token(session, token)
        if order is None:
            raise ApiError(ErrorCode.NOT_FOUND, "no such checkout")
        reply = checkout.status_json(session, order, keys, now_s)
    return jsonify(reply)
