"""Who is calling: signed terminal requests, and the replay guard every signed request shares."""

from __future__ import annotations

from dataclasses import dataclass

from flask import request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.database.directory import TerminalCredential
from paycode.server.database.models import RequestNonce, Terminal
from paycode.server.operations.observability import annotate
from paycode.server.services import config, directory
from paycode.shared import terminal_auth
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

NONCE_CHARS_MAX = 64


def signed_headers(names: tuple[str, ...]) -> list[str]:
    values = [request.headers.get(name, "") for name in names]
    if not all(values):
        raise ApiError(
            ErrorCode.UNAUTHORIZED, f"signed request needs the headers {', '.join(names)}"
        )
    return values


def signed_path() -> str:
    """The path with query as the client signed it (docs/api.md). Werkzeug's full_path adds
    '?' even to an empty query; stripping '?' off its end would also strip a query's own
    trailing '?', so a query changed after signing ("...?id=A-1" sent as "...?id=A-1?") would
    still verify."""
    query = request.query_string.decode()
    return f"{request.path}?{query}" if query else request.path


def check_timestamp(timestamp: str, now_s: float) -> int:
    # isdigit() alone takes superscript two, which int() refuses, and other scripts' digits
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise ApiError(ErrorCode.UNAUTHORIZED, "Paycode-Timestamp must be Unix seconds")
    timestamp_s = int(timestamp)
    if abs(timestamp_s - now_s) > config().request_skew_s_max:
        raise ApiError(ErrorCode.UNAUTHORIZED, "request timestamp is too far from the server clock")
    return timestamp_s


def remember_nonce(session: Session, scope: str, nonce: str, now_s: float) -> None:
    """Refuse a signature seen before: the (scope, nonce) primary key decides, across workers."""
    if not 16 <= len(nonce) <= NONCE_CHARS_MAX or not nonce.isascii():
        raise ApiError(ErrorCode.UNAUTHORIZED, "Paycode-Nonce must be 16-64 ASCII characters")
    expires_at_s = now_s + 2 * config().request_skew_s_max
    try:
        with session.begin_nested():
            session.add(RequestNonce(scope=scope, nonce=nonce, expires_at_s=expires_at_s))
    except IntegrityError as error:
        raise ApiError(ErrorCode.UNAUTHORIZED, "this request signature was already used") from error


@dataclass(frozen=True, slots=True)
class SignedTerminalRequest:
    """A terminal request whose signature verified; `nonce` is not yet known to be fresh."""

    terminal: TerminalCredential
    nonce: str


def signed_terminal_request(now_s: float) -> SignedTerminalRequest:
    """Check the signature headers against the terminal's (cached) secret. Revocation and the
    nonce are the caller's to check, in its transaction: neither may be trusted from a cache."""
    key_id, timestamp, nonce, signature = signed_headers(
        ("Paycode-Key-Id", "Paycode-Timestamp", "Paycode-Nonce", "Paycode-Signature")
    )
    timestamp_s = check_timestamp(timestamp, now_s)
    if not 16 <= len(nonce) <= NONCE_CHARS_MAX or not nonce.isascii():
        raise ApiError(ErrorCode.UNAUTHORIZED, "Paycode-Nonce must be 16-64 ASCII characters")
    terminal = directory().terminal(key_id[:64])
    if terminal is None:
        raise ApiError(ErrorCode.UNAUTHORIZED, "unknown or revoked terminal key")
    valid = terminal_auth.signature_valid(
        terminal.secret,
        request.method,
        signed_path(),
        request.get_data(cache=True),
        timestamp_s=timestamp_s,
        nonce=nonce,
        signature_b64=signature,
    )
    if not valid:
        raise ApiError(ErrorCode.UNAUTHORIZED, "request signature does not verify")
    annotate(terminal_id=terminal.terminal_id)  # the request's log line names who signed
    if not terminal.allows(request.remote_addr):
        raise ApiError(
            ErrorCode.FORBIDDEN, "this merchant's terminals may not call from this address"
        )
    return SignedTerminalRequest(terminal, nonce)


def terminal_revoked(key_id: str) -> ApiError:
    """The error for a terminal revoked since its secret was cached; the cache forgets it."""
    directory().forget_terminal(key_id)
    return ApiError(ErrorCode.UNAUTHORIZED, "unknown or revoked terminal key")


def authenticate_terminal(session: Session, now_s: float) -> TerminalCredential:
    """A signed terminal request that is live and unreplayed, for the ORM-backed endpoints."""
    signed = signed_terminal_request(now_s)
    terminal_id = signed.terminal.terminal_id
    row = session.get(Terminal, terminal_id)
    if row is None or row.revoked_at_s is not None:
        raise terminal_revoked(terminal_id)
    remember_nonce(session, f"terminal:{terminal_id}", signed.nonce, now_s)
    return signed.terminal
