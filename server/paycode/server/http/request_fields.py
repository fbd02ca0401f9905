"""Reading requests strictly: JSON objects only, bounded, typed errors for everything else."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from flask import request

from paycode.shared.codes import ErrorCode
from paycode.shared.errors import AmountInvalid, ApiError
from paycode.shared.money import Money, currency, parse_amount

JSON_DEPTH_MAX = 8


def json_object() -> dict[str, Any]:
    """The request body as a JSON object; 415/400 problems for anything else."""
    if request.mimetype != "application/json":
        raise ApiError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send Content-Type: application/json")
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except _NotStrictJson as error:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"the body is not valid JSON: {error}") from error
    except (ValueError, RecursionError) as error:
        raise ApiError(ErrorCode.INVALID_REQUEST, "the body is not valid JSON") from error
    if not isinstance(body, dict):
        raise ApiError(ErrorCode.INVALID_REQUEST, "the body must be a JSON object")
    if _depth(body) > JSON_DEPTH_MAX:
        raise ApiError(ErrorCode.INVALID_REQUEST, "the body is nested too deeply")
    if _UNSTORABLE_ESCAPE.search(raw) and not _storable(body):
        raise ApiError(
            ErrorCode.INVALID_REQUEST, "the body holds NUL or a lone surrogate in a string"
        )
    return body


class _NotStrictJson(ValueError):
    """What Python's json reads but RFC 8259 does not allow, or leaves to chance."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A repeated key is refused: which one wins is parser-dependent (a proxy, a log reader
    and this server could each see a different amount)."""
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _NotStrictJson("a key is repeated")
    return found


def _no_constant(name: str) -> Any:
    raise _NotStrictJson(f"{name} is not a JSON number")


_UNSTORABLE_ESCAPE = re.compile(rb"\\u(0000|[dD][89a-fA-F])")
"""How json writes what no database column takes: NUL (PostgreSQL refuses it in text) and a
lone surrogate (not UTF-8). A surrogate pair is fine; the escape only says to look."""


def _storable(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" not in value and _utf8(value)
    if isinstance(value, dict):
        return all(_storable(key) and _storable(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_storable(item) for item in value)
    return True


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _depth(value: object, level: int = 0) -> int:
    if level > JSON_DEPTH_MAX:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def request_sha256() -> str:
    """What an Idempotency-Key is bound to: method, path and body (64 hex characters)."""
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def string_field(
    body: dict[str, Any], name: str, *, max_chars: int, required: bool = True
) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"'{name}' must be a non-empty string")
    if len(value) > max_chars:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"'{name}' is longer than {max_chars} characters")
    return value


def money_fields(body: dict[str, Any]) -> Money:
    """`amount` (decimal string) and `currency` (ISO 4217) -> Money; amount_invalid otherwise."""
    amount = body.get("amount")
    code = body.get("currency")
    if not isinstance(amount, str):
        raise ApiError(
            ErrorCode.AMOUNT_INVALID, "'amount' must be a decimal string such as '12.50'"
        )
    if not isinstance(code, str) or len(code) != 3 or not (code.isascii() and code.isupper()):
        raise ApiError(
            ErrorCode.AMOUNT_INVALID, "'currency' must be an ISO 4217 code such as 'CNY'"
        )
    try:
        currency(code)
        return parse_amount(amount, code)
    except AmountInvalid as error:
        raise ApiError(ErrorCode.AMOUNT_INVALID, error.message) from error
