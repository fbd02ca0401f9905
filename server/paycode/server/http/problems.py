"""RFC 9457 problem details carrying the stable error codes of paycode.shared.codes (docs/api.md).

Every error response is `application/problem+json` with `type`, `title`, `status`, `code` and
`detail`. Nothing else (no traceback, no secret, no whole payment code) is ever in it.
"""

from __future__ import annotations

import math
import time
from typing import Any

from flask import Flask, Response, g, has_request_context, json
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from paycode.shared.codes import HTTP_STATUS, ErrorCode
from paycode.shared.errors import PaycodeError

PROBLEM_BASE = "https://paycode.dev/problems/"


def problem_body(code: str, detail: str, status: int) -> dict[str, Any]:
    return {
        "type": PROBLEM_BASE + code,
        "title": code.replace("_", " ").capitalize(),
        "status": status,
        "code": code,
        "detail": detail,
    }


def problem_reply(code: str, detail: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    """(status, body) of a problem to be stored or sent later (an idempotent reply), with
    `extra` members (a failed payment's `payment_id`)."""
    status = HTTP_STATUS[code]
    return status, problem_body(code, detail, status) | extra


def problem(code: str, detail: str, status: int | None = None, **extra: Any) -> Response:
    """A problem response; carries server_time like every body, so clients learn the clock,
    and `extra` members (a wrong PIN's `tries_left`)."""
    status = status or HTTP_STATUS.get(code, 400)
    if has_request_context():
        g.paycode_error_code = code  # for the request's log line and metrics
    body = problem_body(code, detail, status) | extra | {"server_time": time.time()}
    return Response(
        json.dumps(body),
        status=status,
        mimetype="application/problem+json",
    )


def rate_limited(wait_s: float, detail: str) -> Response:
    """429 with Retry-After (whole seconds, at least one); `detail` ends "... in N s"."""
    retry_after_s = max(1, math.ceil(wait_s))
    response = problem(ErrorCode.RATE_LIMITED, f"{detail}; try again in {retry_after_s} s", 429)
    response.headers["Retry-After"] = str(retry_after_s)
    return response


_HTTP_CODES = {
    400: ErrorCode.INVALID_REQUEST,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(PaycodeError)
    def _paycode_error(error: PaycodeError) -> Response:
        status = getattr(error, "status", None) or HTTP_STATUS.get(error.code, 400)
        return problem(error.code, error.message, status)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = _HTTP_CODES.get(
            status, ErrorCode.INVALID_REQUEST if status < 500 else ErrorCode.INTERNAL_ERROR
        )
        return problem(code, error.description or code, status)

    @app.errorhandler(OperationalError)
    def _database_unavailable(error: OperationalError) -> Response:
        # Lost connection, restart, lock timeout: nothing was acknowledged, so a retry with
        # the same Idempotency-Key is safe and gets the true outcome.
        app.logger.warning("database unavailable: %s", type(error.orig).__name__)
        return problem(ErrorCode.DATABASE_BUSY, "the database is unavailable; retry shortly", 503)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        if type(error).__module__ == "gunicorn.http.errors":
            # gunicorn raises these from wsgi.input for a malformed chunked body: the client's
            # fault, as werkzeug's own server says (400). The body was unreadable: nothing changed.
            return problem(ErrorCode.INVALID_REQUEST, "the request body is malformed", 400)
        # Logged with its type only: the exception text may quote a request body or a key.
        app.logger.error("unexpected %s in request", type(error).__name__)
        return problem(ErrorCode.INTERNAL_ERROR, "internal error; the request changed nothing", 500)
