"""Wallet log-in: password check (alike for unknown users), sessions stored as token hashes.

Wrong passwords (at `POST /v1/wallet/sessions` and `POST /v1/wallet/pin`) are counted by
paycode.server.safety.guard per user name and per client address, each attempt reserved
before the password is checked. The trade-off: a stranger who knows a user's name can block
that user's password log-in, so the per-name block is short and grows (1 minute, doubling up
to an hour) and never touches enrolled phones, which pay without the password; the
per-address count has a higher limit but the long back-off (5 minutes up to a day), so it is
the guesser's own address that stays blocked.

Only a hash of a session token is stored. The session opens enrollment; after it, the wallet
signs with its device key (paycode.server.wallets.devices)."""

from __future__ import annotations

import functools
import hashlib
import secrets
import time

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from paycode.server.database.models import (
    User,
    WalletSession,
)
from paycode.server.safety.guard import (
    AttemptRefused,
    GuardScopes,
    GuardSettings,
    release_attempt,
    reserve_attempt,
    settle_wrong,
)
from paycode.server.safety.passwords import hash_password, verify_password
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

USER_CHARS_MAX = 64


TOKEN_BYTES = 32


WRONG_LOGIN = "wrong user name or password"
LOGIN_GUARD = GuardSettings(window_s=900.0, backoff_base_s=60.0, backoff_max_s=3600.0)
"""Per user name: ten wrong passwords in 15 minutes block its log-in for 1 minute, then 2, 4
... up to an hour (short, so a stranger cannot lock a user out for long)."""
LOGIN_FAILURES_MAX = 10
LOGIN_IP_GUARD = GuardSettings(window_s=900.0, backoff_base_s=300.0, backoff_max_s=86_400.0)
"""Per client address: 30 wrong passwords (any names) in 15 minutes block it for 5 minutes,
then 10, 20 ... up to a day."""
LOGIN_FAILURES_PER_IP_MAX = 30


def now_s() -> float:
    """The server clock; one seam so tests can move time without sleeping."""
    return time.time()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@functools.cache
def _dummy_hash() -> str:
    """A real scrypt hash of a random password, checked when the user does not exist, so an
    unknown name costs as long as a wrong password and names cannot be probed by timing."""
    return hash_password(secrets.token_urlsafe(16))


def login_scopes(user_name: str, client_ip: str | None) -> list[tuple[GuardScopes, GuardSettings]]:
    """The counters one password check touches, each with its guard."""
    scopes = [
        (
            GuardScopes((f"wallet:{user_name[:USER_CHARS_MAX]}",), (LOGIN_FAILURES_MAX,)),
            LOGIN_GUARD,
        )
    ]
    if client_ip:
        ip_scope = GuardScopes((f"wallet-ip:{client_ip[:64]}",), (LOGIN_FAILURES_PER_IP_MAX,))
        scopes.append((ip_scope, LOGIN_IP_GUARD))
    return scopes


def reserve_login(
    session: Session, scopes: list[tuple[GuardScopes, GuardSettings]], now_s: float
) -> None:
    """Take one password attempt on every scope before the password is checked, or raise
    AttemptRefused (the caller's transaction rolls back, so no scope keeps a unit):
    concurrent log-ins cannot check more passwords than the limit."""
    for scope, settings in scopes:
        wait_s = reserve_attempt(session.connection(), scope, settings, now_s)
        if wait_s is not None:
            raise AttemptRefused(wait_s)


def settle_login(
    session: Session,
    scopes: list[tuple[GuardScopes, GuardSettings]],
    now_s: float,
    *,
    right: bool,
) -> None:
    """After the check: a right password gives its attempt back, a wrong one keeps it."""
    for scope, settings in scopes:
        if right:
            release_attempt(session.connection(), scope)
        else:
            settle_wrong(session.connection(), scope, settings, now_s)


def find_login(session: Session, user_name: str) -> tuple[str, str] | None:
    """(user id, stored password hash) of `user_name`, or None."""
    row = session.execute(
        select(User.id, User.password_hash).where(User.name == user_name)
    ).one_or_none()
    return None if row is None else (row[0], row[1])


def check_password(found: tuple[str, str] | None, password: str) -> str:
    """The user id if `password` is right; `unauthorized` (one answer for both causes) if not.

    Called outside any transaction: scrypt takes tens of milliseconds, and SQLite's write lock
    must not be held that long.
    """
    stored = found[1] if found is not None else _dummy_hash()
    valid = verify_password(password, stored)
    if found is None or not valid:
        raise ApiError(ErrorCode.UNAUTHORIZED, WRONG_LOGIN)
    return found[0]


def open_session(session: Session, user_id: str, at_s: float, ttl_s: int) -> tuple[str, float]:
    """A new bearer token and its expiry; expired sessions are purged here, so storage stays
    bounded by the logins of one TTL."""
    session.execute(delete(WalletSession).where(WalletSession.expires_at_s <= at_s))
    token = secrets.token_urlsafe(TOKEN_BYTES)
    expires_at_s = at_s + ttl_s
    session.add(
        WalletSession(token_hash=token_hash(token), user_id=user_id, expires_at_s=expires_at_s)
    )
    return token, expires_at_s


def session_user(session: Session, authorization: str, at_s: float) -> str:
    """The user id behind `Authorization: Bearer <token>`; `unauthorized` if absent or expired."""
    scheme, _, token = authorization.partition(" ")
    row = None
    if scheme.lower() == "bearer" and token.strip():
        row = session.get(WalletSession, token_hash(token.strip()))
    if row is None or row.expires_at_s <= at_s:
        raise ApiError(ErrorCode.UNAUTHORIZED, "a valid, unexpired session token is required")
    return row.user_id
