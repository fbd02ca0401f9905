"""/v1/charges and /v1/payments: what a terminal (POS) calls. Every call is HMAC-signed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from paycode.server.books import refunds, settlement, settlement_csv
from paycode.server.charge import planning, step_up, transaction
from paycode.server.charge.offline_charge import charge_offline_code
from paycode.server.charge.result import NONCE_REPLAYED, STORED, TERMINAL_REVOKED
from paycode.server.database.directory import TerminalCredential
from paycode.server.database.engine import db
from paycode.server.database.models import Merchant, Payment, Terminal
from paycode.server.http.idempotency import (
    require_key,
    respond,
    run_keyed_post,
    run_once,
    stored_reply,
)
from paycode.server.http.problems import rate_limited
from paycode.server.http.request_fields import json_object, request_sha256
from paycode.server.http.signed_requests import (
    authenticate_terminal,
    remember_nonce,
    signed_terminal_request,
    terminal_revoked,
)
from paycode.server.operations import lifecycle, metrics
from paycode.server.safety import guard, keyring
from paycode.server.safety.limits import limits_of, pinless_reason
from paycode.server.safety.offline_keys import load_offline_keys
from paycode.server.services import charge_writer, config, directory, secret_box
from paycode.shared.codes import ErrorCode, PaymentStatus
from paycode.shared.errors import ApiError
from paycode.shared.versions.registry import is_offline

bp = Blueprint("charges", __name__, url_prefix="/v1")

LIST_LIMIT_MAX = 100


TerminalAction = Callable[
    [Session, TerminalCredential, dict[str, Any], float], tuple[int, dict[str, Any]]
]


def signed_idempotent_post(action: TerminalAction) -> Response:
    """Every terminal POST: signature, Idempotency-Key, JSON body, then `action` run once."""
    now_s = time.time()
    with db.transaction() as session:
        terminal = authenticate_terminal(session, now_s)
        status, reply, replayed = run_keyed_post(
            session,
            scope=f"terminal:{terminal.terminal_id}",
            now_s=now_s,
            work=lambda body: action(session, terminal, body, now_s),
        )
    return respond(status, reply | {"server_time": now_s}, replayed)


@bp.post("/charges")
def create_charge() -> Response:
    """The hot path: checks and verification in Python, then one database transaction
    (server.charge_store) that records the nonce, the key, the claim and the money."""
    now_s = time.time()
    signed = signed_terminal_request(now_s)
    terminal = signed.terminal
    attempt = planning.ChargeAttempt(
        terminal=terminal,
        nonce=signed.nonce,
        nonce_expires_at_s=now_s + 2 * config().request_skew_s_max,
        idempotency_key=require_key(),
        request_hash=request_sha256(),
        now_s=now_s,
        guard_scopes=guard.scopes_for(
            config().guard, terminal.terminal_id, terminal.merchant_id, request.remote_addr
        ),
    )
    body = json_object()
    if isinstance(body.get("code"), str) and is_offline(body["code"].strip()):
        return _offline_charge(attempt, body)
    keys, _ = keyring.load_keys(db.engine, secret_box())
    statuses = lifecycle.load_statuses(db.engine, time.monotonic(), config().statuses_ttl_s)
    plan = planning.plan_charge(
        attempt, body, directory(), keys, statuses=statuses, limits=config().limits
    )
    result = transaction.execute(db.engine, plan, config().guard, charge_writer())
    metrics.record_charge(result.outcome, plan, body.get("code"))  # no I/O: a few us
    if result.outcome == TERMINAL_REVOKED:
        raise terminal_revoked(signed.terminal.terminal_id)
    if result.outcome == ErrorCode.RATE_LIMITED:
        return rate_limited(float(result.body) - now_s, _blocked_detail(plan))
    if result.outcome == NONCE_REPLAYED:
        raise ApiError(ErrorCode.UNAUTHORIZED, "this request signature was already used")
    if result.outcome == STORED:
        status, reply = stored_reply(
            result.status, result.body, result.request_hash, attempt.request_hash
        )
        return respond(status, reply | {"server_time": now_s}, replayed=True)
    if result.outcome == PaymentStatus.SUCCEEDED and plan.accepted and plan.device:
        directory().learned_drift(plan.accepted.version, plan.device, plan.drift_steps)
    status, reply = plan.replies[result.outcome]
    if result.outcome == ErrorCode.CONFIRMATION_REQUIRED:
        reply = reply | _waiting_reason(plan, now_s)
    return respond(status, reply | {"server_time": now_s}, replayed=False)


def _offline_charge(attempt: planning.ChargeAttempt, body: dict[str, Any]) -> Response:
    """A v4 code (paycode.server.charge.offline_charge): one ORM transaction, with the charge's
    nonce, revocation and idempotency rules; the guessing guard does not count it (a v4 code
    names no device handle to guess, and a forged one costs a signature check like any)."""
    now_s, terminal = attempt.now_s, attempt.terminal
    try:
        with db.transaction() as session:
            row = session.get(Terminal, terminal.terminal_id)
            if row is None or row.revoked_at_s is not None:
                raise terminal_revoked(terminal.terminal_id)
            remember_nonce(session, attempt.scope, attempt.nonce, now_s)
            keys = load_offline_keys(
                session, secret_box(), now_s=now_s, publish_s=config().offline.key_publish_s
            )
            status, reply, replayed = run_once(
                session,
                scope=attempt.scope,
                key=attempt.idempotency_key,
                request_hash=attempt.request_hash,
                now_s=now_s,
                work=lambda: charge_offline_code(
                    session, terminal, body, keys=keys, settings=config().offline, now_s=now_s
                ),
            )
    except ApiError as refused:
        metrics.record_offline_charge(str(refused.code), body.get("code"))
        raise
    if replayed:
        outcome = "idempotent_replay"
    elif status >= 400:  # a refusal run_once stored as the key's answer: a problem body
        outcome = str(reply.get("code") or f"http_{status}")
    else:
        outcome = str(reply.get("status") or "succeeded")
    metrics.record_offline_charge(outcome, body.get("code"), reply.get("payment_id"))
    return respond(status, reply | {"server_time": now_s}, replayed)


def _blocked_detail(plan: planning.ChargePlan) -> str:
    """A genuine code met a block (this till's, this address's, or its phone's handle at this
    merchant after forgeries named it): the customer learns it still pays elsewhere. Only a
    genuine code gets this, so it tells a forger nothing."""
    if plan.accepted is None:
        return "too many failed payment codes here"
    return (
        "too many failed payment codes here (at this till, or naming this phone): the code was "
        "not used and pays at another shop"
    )


def _waiting_reason(plan: planning.ChargePlan, now_s: float) -> dict[str, str]:
    """Which password-free limit a pending charge passed, in words (limits.pinless_reason),
    for the cashier to tell the customer. Read after the transaction: a pending payment moves
    no password-free counter, so this is what it met. Only the first answer carries it; a
    replay of the key answers what was stored."""
    if plan.device is None:
        return {}
    with db.transaction() as session:
        accounts = limits_of(session, plan.device.user_id, config().limits, now_s)
    found = [limits for limits in accounts if limits.currency == plan.currency]
    reason = pinless_reason(found[0], plan.amount_minor) if found else None
    return {"reason": reason} if reason else {}


@bp.post("/payments/<payment_id>/refunds")
def create_refund(payment_id: str) -> Response:
    return signed_idempotent_post(
        lambda session, terminal, body, now_s: refunds.refund(
            session, terminal.merchant_id, payment_id, body, now_s
        )
    )


@bp.post("/payments/<payment_id>/cancel")
def cancel_payment(payment_id: str) -> Response:
    """Give up on a payment waiting for the customer's confirmation (the POS's timeout)."""
    return signed_idempotent_post(
        lambda session, terminal, _body, now_s: step_up.cancel(
            session, refunds.owned_payment(session, terminal.merchant_id, payment_id), now_s
        )
    )


@bp.get("/payments/<payment_id>")
def get_payment(payment_id: str) -> Response:
    now_s = time.time()
    with db.transaction() as session:
        terminal = authenticate_terminal(session, now_s)
        payment = refunds.owned_payment(session, terminal.merchant_id, payment_id)
        reply = planning.payment_json(payment)
    return jsonify(reply | {"server_time": now_s})


@bp.get("/payments")
def find_payments() -> Response:
    """Payments of this merchant with a given merchant_order_id (the merchant's own number)."""
    now_s = time.time()
    with db.transaction() as session:
        terminal = authenticate_terminal(session, now_s)
        order_id = request.args.get("merchant_order_id", "")
        if not order_id or len(order_id) > planning.ORDER_ID_CHARS_MAX:
            raise ApiError(ErrorCode.INVALID_REQUEST, "give ?merchant_order_id= (1-64 characters)")
        rows = session.scalars(
            select(Payment)
            .where(
                Payment.merchant_id == terminal.merchant_id, Payment.merchant_order_id == order_id
            )
            .order_by(Payment.created_at_s.desc())
            .limit(LIST_LIMIT_MAX)
        ).all()
        items = [planning.payment_json(row) for row in rows]
    return jsonify(items=items, server_time=now_s)


@bp.get("/settlement")
def settlement_file() -> Response:
    """This merchant's settlement file for ?date=YYYY-MM-DD, as CSV
    (paycode.server.books.settlement)."""
    now_s = time.time()
    with db.transaction() as session:
        terminal = authenticate_terminal(session, now_s)
    found = settlement.for_merchant(
        db.engine,
        terminal.merchant_id,
        request.args.get("date"),
        config().limits,
        config().settlement,
    )
    response = Response(settlement_csv.to_csv(found), mimetype="text/csv")
    name = settlement_csv.file_name(found)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@bp.get("/merchant")
def merchant_profile() -> Response:
    """Who this terminal collects for: what a collection QR poster carries (EMV 26, 58-60)."""
    now_s = time.time()
    with db.transaction() as session:
        terminal = authenticate_terminal(session, now_s)
        merchant = session.get(Merchant, terminal.merchant_id)
        assert merchant is not None, "a terminal belongs to a merchant"
        reply = {
            "merchant_id": merchant.id,
            "name": merchant.name,
            "city": merchant.city,
            "country": merchant.country,
            "currency": merchant.currency,
            "terminal_id": terminal.terminal_id,
        }
    return jsonify(reply | {"server_time": now_s})
