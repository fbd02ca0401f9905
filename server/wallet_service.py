"""What the wallet endpoints do, apart from HTTP: log-in sessions, enrollment, balance, history.

Each function takes a database Session and plain values, so the blueprint (server/blueprints/
wallet.py) stays a thin layer of request parsing and responses. Security choices live here:
only a hash of a session token is stored; a device key is sealed under the master key the moment
it exists and is unsealed only to build the one response that carries it; the UNIQUE
(version, handle) index, not a prior SELECT, decides handle collisions.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.models import (
    Account,
    Device,
    Merchant,
    Payment,
    RequestNonce,
    User,
    WalletSession,
    new_id,
)
from server.passwords import hash_password, verify_password
from server.problems import ApiError
from server.secretbox import SecretBox
from shared.enrollment import ED25519_BYTES, SYMMETRIC_KEY_BYTES, build_grant
from shared.money import Money, format_amount
from shared.versions.base import VersionStatus
from shared.versions.registry import DEFAULT_STATUS, by_name

USER_CHARS_MAX = 64
LABEL_CHARS_MAX = 64
TOKEN_BYTES = 32
HANDLE_ATTEMPTS_MAX = 8
"""A fresh handle collides with probability <= 1e9 / 1e10 (v1 at a billion devices); eight
collisions in a row is below 1e-8, so running out means a fault, not bad luck."""
HISTORY_LIMIT_DEFAULT = 20
HISTORY_LIMIT_MAX = 100
WRONG_LOGIN = "wrong user name or password"


def now_s() -> float:
    """The server clock; one seam so tests can move time without sleeping."""
    return time.time()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- log in ---------------------------------------------------------------------------------


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
        raise ApiError("unauthorized", WRONG_LOGIN)
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
        raise ApiError("unauthorized", "a valid, unexpired session token is required")
    return row.user_id


# --- enrollment -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnrollRequest:
    version: str
    label: str
    public_key: bytes = field(default=b"", repr=False)


def parse_enroll(
    body: dict[str, Any], statuses: Mapping[str, VersionStatus] = DEFAULT_STATUS
) -> EnrollRequest:
    """Validate the enrollment body; `invalid_request` or `version_retired` otherwise.

    `statuses` is the live lifecycle (server.lifecycle): a deprecated version still enrolls
    (a wallet may need it where tills read only numeric codes), a retired one does not."""
    version = body.get("version")
    if not isinstance(version, str) or version not in DEFAULT_STATUS:
        raise ApiError("invalid_request", f"'version' must be one of {', '.join(DEFAULT_STATUS)}")
    if statuses.get(version, VersionStatus.RETIRED) is VersionStatus.RETIRED:
        raise ApiError("version_retired", f"code version {version} is retired")
    label = body.get("label", "")
    if not isinstance(label, str):
        raise ApiError("invalid_request", "'label' must be a string")
    if version != "v3":
        if "public_key" in body:
            raise ApiError("invalid_request", "'public_key' is for v3 devices only")
        # The wallet builds the label from the host name, which can be long: cut, not refuse.
        return EnrollRequest(version, label[:LABEL_CHARS_MAX])
    return EnrollRequest(version, label[:LABEL_CHARS_MAX], _public_key(body.get("public_key")))


def _public_key(value: object) -> bytes:
    refused = ApiError("invalid_request", "'public_key' must be 32 bytes of base64 (Ed25519)")
    if not isinstance(value, str) or len(value) > 64:
        raise refused
    try:
        raw = base64.b64decode(value, validate=True)
        Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as error:
        raise refused from error
    if len(raw) != ED25519_BYTES:
        raise refused
    return raw


def enroll_device(
    session: Session, *, user_id: str, wanted: EnrollRequest, box: SecretBox, at_s: float
) -> Device:
    """Insert a device with a fresh handle; on a UNIQUE collision, retry with a new one."""
    for _ in range(HANDLE_ATTEMPTS_MAX):
        device = _new_device(user_id, wanted, box, at_s)
        try:
            with session.begin_nested():
                session.add(device)
        except IntegrityError:
            continue
        return device
    # Not an ApiError: the idempotency record must not keep this fault as the key's answer.
    raise RuntimeError(f"no free {wanted.version} handle after {HANDLE_ATTEMPTS_MAX} attempts")


def _new_device(user_id: str, wanted: EnrollRequest, box: SecretBox, at_s: float) -> Device:
    device = Device(
        id=new_id("dev"),
        user_id=user_id,
        version=wanted.version,
        handle=by_name(wanted.version).new_handle(),
        drift_steps=0,
        label=wanted.label,
        created_at_s=at_s,
    )
    if wanted.version == "v3":
        device.public_key = wanted.public_key
    else:
        device.key_id, device.key_sealed = box.seal(
            os.urandom(SYMMETRIC_KEY_BYTES), row_id=device.id
        )
    return device


def grant_for(
    session: Session, device_id: str, box: SecretBox, current: dict[str, bytes], at_s: float
) -> dict[str, object]:
    """The grant of an enrolled device, rebuilt from its row.

    The idempotency record keeps only the device id, so the device key exists at rest only
    sealed; a retry rebuilds the same grant (with the server time of the retry, so the
    wallet learns the clock right).
    """
    device = session.get(Device, device_id)
    if device is None or device.revoked_at_s is not None:
        raise ApiError("device_revoked", "the device this key enrolled was revoked")
    if device.version == "v3":
        return build_grant(
            version="v3",
            device_id=device.id,
            handle=device.handle,
            server_time_s=at_s,
            seal_public_key=current["seal_public"],
        )
    assert device.key_id is not None and device.key_sealed is not None
    return build_grant(
        version=device.version,
        device_id=device.id,
        handle=device.handle,
        server_time_s=at_s,
        device_key=box.open(device.key_id, device.key_sealed, row_id=device.id),
        hiding_key=current[device.version],
    )


def device_verify_key(device: Device, box: SecretBox) -> bytes:
    """What checks this device's request signatures: its HMAC key (v1/v2) or public key (v3)."""
    if device.version == "v3":
        return device.public_key or b""
    if device.key_id is None or device.key_sealed is None:
        return b""
    return box.open(device.key_id, device.key_sealed, row_id=device.id)


def forget_old_nonces(session: Session, scope: str, at_s: float) -> None:
    """Drop this device's nonces that can no longer be replayed (their timestamps are stale
    anyway), so the replay guard's storage stays bounded without a background job."""
    session.execute(
        delete(RequestNonce).where(RequestNonce.scope == scope, RequestNonce.expires_at_s < at_s)
    )


# --- balance and history --------------------------------------------------------------------


def balances(session: Session, user_id: str) -> list[dict[str, object]]:
    rows = session.scalars(
        select(Account)
        .where(Account.owner_kind == "user", Account.owner_id == user_id)
        .order_by(Account.currency)
    ).all()
    return [
        {
            "currency": row.currency,
            "balance": format_amount(Money(row.balance_minor, row.currency)),
            "balance_minor": row.balance_minor,
        }
        for row in rows
    ]


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return HISTORY_LIMIT_DEFAULT
    digits = raw.isascii() and raw.isdigit() and len(raw) <= 3
    if not digits or not 1 <= int(raw) <= HISTORY_LIMIT_MAX:
        raise ApiError("invalid_request", f"'limit' must be an integer 1-{HISTORY_LIMIT_MAX}")
    return int(raw)


def history(session: Session, user_id: str, limit: int) -> list[dict[str, object]]:
    """This user's payments, newest first (failed ones too: their code was still used)."""
    assert 1 <= limit <= HISTORY_LIMIT_MAX
    rows = session.execute(
        select(Payment, Merchant.name)
        .join(Merchant, Merchant.id == Payment.merchant_id)
        .where(Payment.user_id == user_id)
        .order_by(Payment.created_at_s.desc(), Payment.id.desc())
        .limit(limit)
    ).all()
    return [_history_item(payment, merchant) for payment, merchant in rows]


def _history_item(payment: Payment, merchant: str) -> dict[str, object]:
    created = datetime.fromtimestamp(payment.created_at_s, UTC)
    return {
        "payment_id": payment.id,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "merchant": merchant,
        "amount": format_amount(Money(payment.amount_minor, payment.currency)),
        "currency": payment.currency,
        "status": payment.status,
        "refunded": format_amount(Money(payment.refunded_minor, payment.currency)),
    }
