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
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.database.models import (
    Account,
    Device,
    Merchant,
    Payment,
    RequestNonce,
    User,
    WalletSession,
    new_id,
)
from paycode.server.operations import lifecycle
from paycode.server.safety.passwords import hash_password, verify_password
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.codes import ErrorCode
from paycode.shared.enrollment import ED25519_BYTES, SYMMETRIC_KEY_BYTES, build_grant
from paycode.shared.errors import ApiError
from paycode.shared.money import Money, format_amount
from paycode.shared.timestamps import iso_time
from paycode.shared.versions.base import VersionStatus
from paycode.shared.versions.registry import DEFAULT_STATUS, by_name

USER_CHARS_MAX = 64
LABEL_CHARS_MAX = 64
TOKEN_BYTES = 32
HANDLE_ATTEMPTS_MAX = 8
"""A fresh handle collides with probability <= 1e9 / 1e10 (v1 at a billion devices); eight
collisions in a row is below 1e-8, so running out means a fault, not bad luck."""
HISTORY_LIMIT_DEFAULT = 20
HISTORY_LIMIT_MAX = 100
DEVICES_LISTED_MAX = 100
"""A user's devices a listing shows: live ones first, then the most recently revoked. Every
rotation leaves a revoked device behind, so the list is bounded, not the history."""
DEVICES_LIMIT_MAX = 1000
"""The most an operator may list at once (`paycode-server devices list --limit`)."""
DEVICE_ID_CHARS_MAX = 32
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
        raise ApiError(
            ErrorCode.INVALID_REQUEST, f"'version' must be one of {', '.join(DEFAULT_STATUS)}"
        )
    if statuses.get(version, VersionStatus.RETIRED) is VersionStatus.RETIRED:
        raise ApiError(ErrorCode.VERSION_RETIRED, f"code version {version} is retired")
    label = body.get("label", "")
    if not isinstance(label, str):
        raise ApiError(ErrorCode.INVALID_REQUEST, "'label' must be a string")
    if version != "v3":
        if "public_key" in body:
            raise ApiError(ErrorCode.INVALID_REQUEST, "'public_key' is for v3 devices only")
        # The wallet builds the label from the host name, which can be long: cut, not refuse.
        return EnrollRequest(version, label[:LABEL_CHARS_MAX])
    return EnrollRequest(version, label[:LABEL_CHARS_MAX], _public_key(body.get("public_key")))


def _public_key(value: object) -> bytes:
    refused = ApiError(
        ErrorCode.INVALID_REQUEST, "'public_key' must be 32 bytes of base64 (Ed25519)"
    )
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
        raise ApiError(ErrorCode.DEVICE_REVOKED, "the device this key enrolled was revoked")
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


# --- device lifecycle: list, revoke, rotate -------------------------------------------------


def user_devices(session: Session, user_id: str, limit: int = DEVICES_LISTED_MAX) -> list[Device]:
    """A user's devices: live ones first (newest first), then the most recently revoked."""
    assert 1 <= limit <= DEVICES_LIMIT_MAX
    rows = session.scalars(
        select(Device)
        .where(Device.user_id == user_id)
        .order_by(Device.revoked_at_s.desc().nulls_first(), Device.created_at_s.desc(), Device.id)
        .limit(limit)
    ).all()
    return list(rows)


def device_json(device: Device) -> dict[str, object]:
    """What anyone allowed to see a device is shown: never its handle or key."""
    revoked_at_s = device.revoked_at_s
    return {
        "device_id": device.id,
        "version": device.version,
        "label": device.label,
        "created_at": iso_time(device.created_at_s),
        "revoked": revoked_at_s is not None,
        "revoked_at": None if revoked_at_s is None else iso_time(revoked_at_s),
    }


def wallet_device_json(
    device: Device, statuses: Mapping[str, VersionStatus], caller_id: str
) -> dict[str, object]:
    """A device as its own user's wallet sees it: which one is calling, and whether its code
    version is being phased out (`reenroll`: the advice balance gives, per live device)."""
    status = statuses.get(device.version, VersionStatus.RETIRED)
    live = device.revoked_at_s is None
    return device_json(device) | {
        "current": device.id == caller_id,
        "version_status": str(status),
        "reenroll": lifecycle.reenroll_advice(device.version, statuses) if live else None,
    }


def revoke(session: Session, device: Device, at_s: float) -> bool:
    """Revoke `device`. True if this call did, False if it already was: the conditional UPDATE
    lets two racing revocations agree on one, and the first time is kept."""
    result = session.execute(
        update(Device)
        .where(Device.id == device.id, Device.revoked_at_s.is_(None))
        .values(revoked_at_s=at_s),
        execution_options={"synchronize_session": False},
    )
    session.refresh(device)
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def own_device(session: Session, user_id: str, device_id: str) -> Device:
    """One of `user_id`'s devices. Another user's device gets the very answer a device that
    does not exist gets, so ids cannot be probed."""
    device = session.scalars(
        select(Device).where(
            Device.id == device_id[:DEVICE_ID_CHARS_MAX], Device.user_id == user_id
        )
    ).one_or_none()
    if device is None:
        raise ApiError(ErrorCode.NOT_FOUND, "no such device among yours")
    return device


def revoke_own(session: Session, caller: Device, device_id: str, at_s: float) -> dict[str, object]:
    """The wallet's revocation of one of its user's devices (itself included)."""
    device = own_device(session, caller.user_id, device_id)
    revoked_now = revoke(session, device, at_s)
    return device_json(device) | {
        "current": device.id == caller.id,
        "already_revoked": not revoked_now,
    }


def rotate(
    session: Session,
    caller: Device,
    body: dict[str, Any],
    *,
    statuses: Mapping[str, VersionStatus],
    box: SecretBox,
    at_s: float,
) -> Device:
    """Enroll a new device for the caller's user and revoke the caller, in one transaction:
    a key rotation (same version) or a re-enrollment (another one) without a password.

    The new device keeps the caller's label unless the body names one."""
    wanted = parse_enroll({"label": caller.label} | body, statuses)
    device = enroll_device(session, user_id=caller.user_id, wanted=wanted, box=box, at_s=at_s)
    if not revoke(session, caller, at_s):
        # Revoked by someone else since it signed this request: roll the new device back.
        raise ApiError(ErrorCode.UNAUTHORIZED, "unknown or revoked device")
    return device


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
        raise ApiError(
            ErrorCode.INVALID_REQUEST, f"'limit' must be an integer 1-{HISTORY_LIMIT_MAX}"
        )
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
    return {
        "payment_id": payment.id,
        "created_at": iso_time(payment.created_at_s),
        "merchant": merchant,
        "amount": format_amount(Money(payment.amount_minor, payment.currency)),
        "currency": payment.currency,
        "status": payment.status,
        "refunded": format_amount(Money(payment.refunded_minor, payment.currency)),
    }
