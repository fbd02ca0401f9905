"""/v1/offline: what a till needs to sell offline and how it forwards what it sold
(docs/offline.md §4.1, §5). Terminal-signed, like /v1/charges.

    GET  /v1/offline/keys          the server's offline keys, denied certificates, the limits
    POST /v1/offline/acceptances   one record of the till's log, in seq order, settled once

A record's own row (UNIQUE (terminal_id, id)) is its idempotency record, kept for good: a
retry days later gets the stored result and moves nothing. A record that does not follow the
till's chain is answered 409 and stored nowhere, so the till can send the right one first and
then this one again with the same key.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify
from sqlalchemy import select

from paycode.server.books.offline_chain import ChainOutOfOrder, parse_record
from paycode.server.books.offline_settlement import settle_acceptance
from paycode.server.books.offline_verify import floor_minor
from paycode.server.database.engine import db
from paycode.server.database.models import Merchant
from paycode.server.database.offline_models import OfflineCertificate
from paycode.server.http.idempotency import require_key, respond
from paycode.server.http.problems import problem
from paycode.server.http.request_fields import json_object
from paycode.server.http.signed_requests import authenticate_terminal
from paycode.server.safety.offline_keys import load_offline_keys
from paycode.server.services import config, secret_box
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

bp = Blueprint("offline_terminal", __name__, url_prefix="/v1/offline")

U32_MAX = 2**32 - 1
"""A code's amount is a u32, so no larger limit means anything; tills read limits as u32."""

DENIED_LISTED_MAX = 10_000
"""Denied certificates a till is sent (beyond it, the soonest to expire are left out). Each
lives at most a certificate lifetime, so this bounds the answer, not a realistic list."""


@bp.get("/keys")
def offline_keys() -> Response:
    now_s = time.time()
    settings = config().offline
    with db.transaction() as session:
        terminal = authenticate_terminal(session, now_s)
        merchant = session.get(Merchant, terminal.merchant_id)
        assert merchant is not None, "a terminal belongs to a merchant"
        keys = load_offline_keys(
            session, secret_box(), now_s=now_s, publish_s=settings.key_publish_s
        )
        denied = session.execute(
            select(OfflineCertificate.cert_id, OfflineCertificate.expires_at_s)
            .where(
                OfflineCertificate.denied_at_s.is_not(None),
                OfflineCertificate.expires_at_s > now_s,
            )
            .order_by(OfflineCertificate.expires_at_s.desc(), OfflineCertificate.cert_id)
            .limit(DENIED_LISTED_MAX)
        ).all()
        reply = {
            "keys": keys.public_json(
                accept_until_s=int(now_s) + settings.lifetime_s + settings.grace_s
            ),
            "denied": [
                {"cert_id": cert_id, "until_s": int(until_s)} for cert_id, until_s in denied
            ],
            "limits": {
                "floor_minor": min(floor_minor(merchant, settings), U32_MAX),
                "till_total_minor": min(settings.till_total_minor, U32_MAX),
                "till_count_max": settings.till_count_max,
                "unsynced_age_max_s": settings.unsynced_age_max_s,
            },
            "currency": merchant.currency,
            "merchant_id": merchant.id,
            "terminal_id": terminal.terminal_id,
        }
    return jsonify(reply | {"server_time": now_s})


@bp.post("/acceptances")
def forward_acceptance() -> Response:
    now_s = time.time()
    settings = config().offline
    try:
        with db.transaction() as session:
            terminal = authenticate_terminal(session, now_s)
            key = require_key()
            record = parse_record(json_object())
            if key != record.id:
                raise ApiError(
                    ErrorCode.INVALID_REQUEST, "the Idempotency-Key of a record is its id"
                )
            merchant = session.get(Merchant, terminal.merchant_id)
            assert merchant is not None, "a terminal belongs to a merchant"
            keys = load_offline_keys(
                session, secret_box(), now_s=now_s, publish_s=settings.key_publish_s
            )
            settled = settle_acceptance(
                session,
                terminal_id=terminal.terminal_id,
                merchant=merchant,
                record=record,
                keys=keys,
                settings=settings,
                now_s=now_s,
            )
    except ChainOutOfOrder as error:
        return problem(error.code, error.message, expected_seq=error.expected_seq)
    return respond(200, settled.json() | {"server_time": now_s}, settled.replayed)
