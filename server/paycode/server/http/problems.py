"""RFC 9457 problem details carrying the stable error codes of BRIEF §5.

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

from paycode.shared.errors import PaycodeError

PROBLEM_BASE = "https://paycode.dev/problems/"

STATUS_BY_CODE: dict[str, int] = {
    "invalid_request": 400,
    "code_malformed": 400,
    "qr_invalid": 400,
    "amount_invalid": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "password_invalid": 400,
    "user_exists": 409,
    "merchant_exists": 409,
    "idempotency_conflict": 409,
    "idempotency_in_progress": 409,
    "duplicate_order": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "code_invalid": 422,
    "code_expired": 422,
    "code_replayed": 422,
    "code_ambiguous": 422,
    "version_retired": 422,
    "device_revoked": 422,
    "merchant_mismatch": 422,
    "insufficient_funds": 422,
    "device_locked": 422,
    "limit_exceeded": 422,
    "confirmation_required": 202,  # not an error: the charge waits for the customer's PIN
    "pin_invalid": 403,
    "pin_not_set": 409,
    "payment_not_pending": 409,
    "confirmation_expired": 409,
    "currency_mismatch": 422,
    "refund_exceeds_payment": 422,
    "payment_not_refundable": 422,
    "payment_changed": 409,
    "date_invalid": 400,
    "ledger_mismatch": 409,  # the settlement does not add up: `paycode-server reconcile`
    "settlement_too_large": 422,
    "rate_limited": 429,
    "internal_error": 500,
    "database_busy": 503,
}


class ApiError(PaycodeError):
    """Raise anywhere in a request: the handler turns it into a problem response."""

    def __init__(self, code: str, detail: str, *, status: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.status = status or STATUS_BY_CODE.get(code, 400)


def problem_body(code: str, detail: str, status: int) -> dict[str, Any]:
    return {
        "type": PROBLEM_BASE + code,
        "title": code.replace("_", " ").capitalize(),
        "status": status,
        "code": code,
        "detail": detail,
    }


def problem(code: str, detail: str, status: int | None = None) -> Response:
    """A problem response; carries server_time like every body, so clients learn the clock."""
    status = status or STATUS_BY_CODE.get(code, 400)
    if has_request_context():
        g.paycode_error_code = code  # for the request's log line and metrics
    return Response(
        json.dumps(problem_body(code, detail, status) | {"server_time": time.time()}),
        status=status,
        mimetype="application/problem+json",
    )


def rate_limited(wait_s: float, detail: str) -> Response:
    """429 with Retry-After (whole seconds, at least one); `detail` ends "... in N s"."""
    retry_after_s = max(1, math.ceil(wait_s))
    response = problem("rate_limited", f"{detail}; try again in {retry_after_s} s", 429)
    response.headers["Retry-After"] = str(retry_after_s)
    return response


_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(PaycodeError)
    def _paycode_error(error: PaycodeError) -> Response:
        status = getattr(error, "status", None) or STATUS_BY_CODE.get(error.code, 400)
        return problem(error.code, error.message, status)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = _HTTP_CODES.get(status, "invalid_request" if status < 500 else "internal_error")
        return problem(code, error.description or code, status)

    @app.errorhandler(OperationalError)
    def _database_unavailable(error: OperationalError) -> Response:
        # Lost connection, restart, lock timeout: nothing was acknowledged, so a retry with
        # the same Idempotency-Key is safe and gets the true outcome.
        app.logger.warning("database unavailable: %s", type(error.orig).__name__)
        return problem("database_busy", "the database is unavailable; retry shortly", 503)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        if type(error).__module__ == "gunicorn.http.errors":
            # gunicorn raises these from wsgi.input for a malformed chunked body: the client's
            # fault, as werkzeug's own server says (400). The body was unreadable: nothing changed.
            return problem("invalid_request", "the request body is malformed", 400)
        # Logged with its type only: the exception text may quote a request body or a key.
        app.logger.error("unexpected %s in request", type(error).__name__)
        return problem("internal_error", "internal error; the request changed nothing", 500)
