"""Wallet log-in: password check (alike for unknown users), sessions stored as token hashes.

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
from paycode.server.safety.passwords import hash_password, verify_password
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError

USER_CHARS_MAX = 64


TOKEN_BYTES = 32


WRONG_LOGIN = "wrong user name or password"


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
