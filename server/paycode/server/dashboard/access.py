"""Merchant log-in for the dashboard: a password no terminal holds, cookie sessions, CSRF tokens.

The credential is the merchant's own (set by the operator with `paycode-server merchants
set-password`), so a stolen till key cannot open the dashboard and a dashboard password cannot
charge. Sessions live in the database like wallet sessions (only a SHA-256 of the token is
stored), so every worker and host sees the same log-ins and a password change ends them all.
Wrong passwords are counted by paycode.server.safety.guard per merchant name and per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from paycode.server.database.models import Merchant, MerchantSession
from paycode.server.safety.guard import (
    AttemptRefused,
    GuardScopes,
    GuardSettings,
    release_attempt,
    reserve_attempt,
    settle_wrong,
)
from paycode.server.safety.passwords import PasswordInvalid, hash_password
from paycode.server.wallets import sessions
from paycode.shared import credentials
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

COOKIE_NAME = "paycode_dashboard"
SESSION_TTL_S = 8 * 3600
"""A working day; after it the merchant logs in again."""
TOKEN_BYTES = 32
NAME_CHARS_MAX = 64
PASSWORD_CHARS_MAX = 1024
PASSWORD_CHARS_MIN = credentials.PASSWORD_CHARS_MIN  # one policy for every password
"""The dashboard can refund money, so its password is longer than a wallet's may be."""
LOGIN_GUARD = GuardSettings(window_s=900.0, backoff_base_s=300.0, backoff_max_s=86_400.0)
"""Ten wrong passwords for one merchant (50 from one address) in 15 minutes block its log-in
for 5 minutes, then 10, 20 ... up to a day."""
LOGIN_FAILURES_MAX = 10
LOGIN_FAILURES_PER_IP_MAX = 50
WRONG_LOGIN = "wrong merchant name or password"


@dataclass(frozen=True, slots=True)
class DashboardSession:
    merchant_id: str
    token: str
    expires_at_s: float


def login_scopes(name: str, client_ip: str | None) -> GuardScopes:
    names = [f"dashboard:{name[:NAME_CHARS_MAX]}"]
    limits = [LOGIN_FAILURES_MAX]
    if client_ip:
        names.append(f"dashboard-ip:{client_ip[:64]}")
        limits.append(LOGIN_FAILURES_PER_IP_MAX)
    return GuardScopes(tuple(names), tuple(limits))


def reserve_login(session: Session, scopes: GuardScopes, now_s: float) -> None:
    """Take one log-in attempt on every scope before the password is checked, or raise
    AttemptRefused (the caller's transaction rolls back), so concurrent log-ins cannot check
    more passwords than the limit (paycode.server.safety.guard.reserve_attempt)."""
    wait_s = reserve_attempt(session.connection(), scopes, LOGIN_GUARD, now_s)
    if wait_s is not None:
        raise AttemptRefused(wait_s)


def settle_login(session: Session, scopes: GuardScopes, now_s: float, *, right: bool) -> None:
    """After the check: a right password gives its attempt back, a wrong one keeps it."""
    if right:
        release_attempt(session.connection(), scopes)
    else:
        settle_wrong(session.connection(), scopes, LOGIN_GUARD, now_s)


def find_login(session: Session, name: str) -> tuple[str, str] | None:
    """(merchant id, password hash) of a merchant whose dashboard is open, or None."""
    row = session.execute(
        select(Merchant.id, Merchant.password_hash).where(Merchant.name == name[:NAME_CHARS_MAX])
    ).one_or_none()
    if row is None or row[1] is None:
        return None
    return (row[0], row[1])


def check_password(found: tuple[str, str] | None, password: str) -> str:
    """The merchant id, or `unauthorized`; as slow for an unknown name as for a wrong password.
    Called outside any transaction (scrypt takes tens of milliseconds)."""
    try:
        return sessions.check_password(found, password[:PASSWORD_CHARS_MAX])
    except ApiError as error:
        raise ApiError(ErrorCode.UNAUTHORIZED, WRONG_LOGIN) from error


def open_session(session: Session, merchant_id: str, now_s: float) -> DashboardSession:
    """A new session; expired ones are purged here, so the table stays bounded."""
    session.execute(delete(MerchantSession).where(MerchantSession.expires_at_s <= now_s))
    token = secrets.token_urlsafe(TOKEN_BYTES)
    expires_at_s = now_s + SESSION_TTL_S
    session.add(
        MerchantSession(
            token_hash=sessions.token_hash(token),
            merchant_id=merchant_id,
            expires_at_s=expires_at_s,
        )
    )
    return DashboardSession(merchant_id, token, expires_at_s)


def session_merchant(session: Session, token: str | None, now_s: float) -> str | None:
    """The merchant logged in with `token`, or None (absent, unknown or expired)."""
    if not token or len(token) > 2 * TOKEN_BYTES:
        return None
    row = session.get(MerchantSession, sessions.token_hash(token))
    if row is None or row.expires_at_s <= now_s:
        return None
    return row.merchant_id


def close_session(session: Session, token: str | None) -> None:
    if token and len(token) <= 2 * TOKEN_BYTES:
        session.execute(
            delete(MerchantSession).where(MerchantSession.token_hash == sessions.token_hash(token))
        )


def csrf_token(token: str) -> str:
    """The form token of a session: derived from the cookie's secret, which a page from another
    site can neither read nor guess, so only our own pages can post a refund."""
    key = token.encode("utf-8", "surrogatepass")  # a cookie is whatever the client sent
    return hmac.new(key, b"paycode-dashboard-csrf", hashlib.sha256).hexdigest()


def csrf_valid(token: str, given: str | None) -> bool:
    """Compared as bytes: compare_digest raises TypeError on a str that is not ASCII."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(csrf_token(token).encode(), given.encode("utf-8", "surrogatepass"))


def set_password(session: Session, merchant_id: str, password: str) -> None:
    """Set (or change) the dashboard password; every open session of the merchant ends."""
    if len(password) < PASSWORD_CHARS_MIN:
        raise ApiError(
            ErrorCode.PASSWORD_INVALID,
            f"a dashboard password has at least {PASSWORD_CHARS_MIN} characters",
        )
    try:
        password_hash = hash_password(password)
    except PasswordInvalid as error:
        raise ApiError(ErrorCode.PASSWORD_INVALID, str(error)) from error
    session.execute(
        update(Merchant).where(Merchant.id == merchant_id).values(password_hash=password_hash)
    )
    session.execute(delete(MerchantSession).where(MerchantSession.merchant_id == merchant_id))


def close_dashboard(session: Session, merchant_id: str) -> None:
    """Remove the password: the merchant can no longer log in, and open sessions end."""
    session.execute(update(Merchant).where(Merchant.id == merchant_id).values(password_hash=None))
    session.execute(delete(MerchantSession).where(MerchantSession.merchant_id == merchant_id))
