"""Idempotency-Key: the first response to a key is stored in the same transaction as its work.

A retry with the same key and body gets the stored response (a failure too); the same key with
a different body is `idempotency_conflict`. Two concurrent requests with one key meet at the
primary key: on PostgreSQL the second insert waits for the first transaction, then finds its
stored response; it never does the work twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Response, request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.database.models import IdempotencyRecord
from paycode.server.http.problems import problem_body
from paycode.server.http.request_fields import json_object, request_sha256
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

KEY_CHARS_MAX = 128
PENDING_STATUS = 0

Work = Callable[[], tuple[int, dict[str, Any]]]


def require_key() -> str:
    key = request.headers.get("Idempotency-Key", "")
    if not key:
        raise ApiError(ErrorCode.INVALID_REQUEST, "POST requests need an Idempotency-Key header")
    if len(key) > KEY_CHARS_MAX or not key.isascii() or not key.isprintable():
        raise ApiError(
            ErrorCode.INVALID_REQUEST, f"Idempotency-Key must be 1-{KEY_CHARS_MAX} ASCII characters"
        )
    return key


def stored_reply(
    status: int, body: str, stored_hash: str, request_hash: str
) -> tuple[int, dict[str, Any]]:
    """The reply stored for a key, if this request is the one that key was first used for."""
    if stored_hash != request_hash:
        raise ApiError(
            ErrorCode.IDEMPOTENCY_CONFLICT, "this Idempotency-Key was used with a different request"
        )
    if status == PENDING_STATUS:
        raise ApiError(
            ErrorCode.IDEMPOTENCY_IN_PROGRESS,
            "a request with this Idempotency-Key is still running",
        )
    reply: dict[str, Any] = json.loads(body)
    return status, reply


def _stored(record: IdempotencyRecord, request_hash: str) -> tuple[int, dict[str, Any]]:
    return stored_reply(record.status_code, record.response_body, record.request_hash, request_hash)


def run_once(
    session: Session, *, scope: str, key: str, request_hash: str, now_s: float, work: Work
) -> tuple[int, dict[str, Any], bool]:
    """(status, body, replayed). `work` runs inside a savepoint; an ApiError it raises becomes
    the stored response, and its partial writes are rolled back."""
    existing = session.get(IdempotencyRecord, (scope, key))
    if existing is not None:
        return (*_stored(existing, request_hash), True)
    record = IdempotencyRecord(
        scope=scope,
        key=key,
        request_hash=request_hash,
        status_code=PENDING_STATUS,
        response_body="{}",
        created_at_s=now_s,
    )
    try:
        with session.begin_nested():
            session.add(record)
    except IntegrityError:
        session.expire_all()
        raced = session.get(IdempotencyRecord, (scope, key))
        assert raced is not None
        return (*_stored(raced, request_hash), True)
    try:
        with session.begin_nested():
            status, body = work()
    except ApiError as error:
        status, body = error.status, problem_body(error.code, error.message, error.status)
    record.status_code = status
    record.response_body = json.dumps(body)
    return status, body, False


def run_keyed_post(
    session: Session,
    *,
    scope: str,
    now_s: float,
    work: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]],
) -> tuple[int, dict[str, Any], bool]:
    """A POST's Idempotency-Key header and JSON body, then `work(body)` run once for the key."""
    key = require_key()
    body = json_object()
    return run_once(
        session,
        scope=scope,
        key=key,
        request_hash=request_sha256(),
        now_s=now_s,
        work=lambda: work(body),
    )


def respond(status: int, body: dict[str, Any], replayed: bool) -> Response:
    mimetype = "application/problem+json" if status >= 400 else "application/json"
    response = Response(json.dumps(body), status=status, mimetype=mimetype)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response
