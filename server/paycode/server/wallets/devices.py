"""Enrollment and the devices of a wallet: grants, device keys, listing, revoking, rotating.

A device key is sealed under the master key the moment it exists and is unsealed only to build
the one response that carries it; the UNIQUE (version, handle) index, not a prior SELECT,
decides handle collisions."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from paycode.server.database.models import (
    Device,
    RequestNonce,
    new_id,
)
from paycode.server.operations import lifecycle
from paycode.server.safety.secretbox import SecretBox
from paycode.shared.codes import ErrorCode
from paycode.shared.enrollment import ED25519_BYTES, SYMMETRIC_KEY_BYTES, build_grant
from paycode.shared.errors import ApiError, WeakKey
from paycode.shared.key_proof import ProofScope, device_scope, proof_valid
from paycode.shared.keycheck import check_ed25519_public
from paycode.shared.timestamps import iso_time
from paycode.shared.versions.base import VersionStatus
from paycode.shared.versions.registry import DEFAULT_STATUS, by_name

LABEL_CHARS_MAX = 64


HANDLE_ATTEMPTS_MAX = 8
"""A fresh handle collides with probability <= 1e9 / 1e10 (v1 at a billion devices); eight
collisions in a row is below 1e-8, so running out means a fault, not bad luck."""


DEVICES_LISTED_MAX = 100
"""A user's devices a listing shows: live ones first, then the most recently revoked. Every
rotation leaves a revoked device behind, so the list is bounded, not the history."""


DEVICES_LIMIT_MAX = 1000
"""The most an operator may list at once (`paycode-server devices list --limit`)."""


DEVICE_ID_CHARS_MAX = 32


@dataclass(frozen=True, slots=True)
class EnrollRequest:
    version: str
    label: str
    public_key: bytes = field(default=b"", repr=False)


def parse_enroll(
    body: dict[str, Any],
    statuses: Mapping[str, VersionStatus] = DEFAULT_STATUS,
    scope: ProofScope | None = None,
) -> EnrollRequest:
    """Validate the enrollment body; `invalid_request`, `version_retired`, `weak_key` or
    `key_proof_invalid` otherwise.

    `statuses` is the live lifecycle (server.lifecycle): a deprecated version still enrolls
    (a wallet may need it where tills read only numeric codes), a retired one does not.
    `scope` is what a v3 key's proof of possession must be bound to; without one, no v3 key
    enrolls."""
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
        if "public_key" in body or "proof" in body:
            raise ApiError(
                ErrorCode.INVALID_REQUEST, "'public_key' and 'proof' are for v3 devices only"
            )
        # The wallet builds the label from the host name, which can be long: cut, not refuse.
        return EnrollRequest(version, label[:LABEL_CHARS_MAX])
    public_key = _public_key(body.get("public_key"))
    if scope is None or not proof_valid(body.get("proof"), version, public_key, scope):
        raise ApiError(
            ErrorCode.KEY_PROOF_INVALID,
            "'proof' must be the new key's signature over this enrollment (docs/spec.md §6.1)",
        )
    return EnrollRequest(version, label[:LABEL_CHARS_MAX], public_key)


def _public_key(value: object) -> bytes:
    refused = ApiError(
        ErrorCode.INVALID_REQUEST, "'public_key' must be 32 bytes of base64 (Ed25519)"
    )
    if not isinstance(value, str) or len(value) > 64:
        raise refused
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise refused from error
    if len(raw) != ED25519_BYTES:
        raise refused
    try:
        return check_ed25519_public(raw)
    except WeakKey as error:
        # An ApiError, so an idempotent retry is answered with the same refusal.
        raise ApiError(ErrorCode.WEAK_KEY, error.message) from error


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


def reset_drift(session: Session, device: Device) -> None:
    """The drift learned for every device of `device`'s user goes back to 0: its own key just
    signed a call whose reply carries the server's time, and the wallet re-syncs from it the
    clock every version it holds uses, though it signs with one device (docs/spec.md §2).
    Another phone of the user, offline on a wrong clock, is then refused until it goes online
    too: better than a version stuck on a stale drift (codes never move it down). A revoked
    device (let through for its own retry) resets nothing."""
    if device.revoked_at_s is not None:
        return
    session.execute(
        update(Device)
        .where(Device.user_id == device.user_id, Device.drift_steps != 0)
        .values(drift_steps=0)
    )


def user_devices(session: Session, user_id: str, limit: int = DEVICES_LISTED_MAX) -> list[Device]:
    """A user's devices: live ones first (newest first), then the most recently revoked. The
    server's own issuers of codes issued online are not among them (docs/spec.md §14)."""
    assert 1 <= limit <= DEVICES_LIMIT_MAX
    rows = session.scalars(
        select(Device)
        .where(Device.user_id == user_id, Device.online_for_device_id.is_(None))
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
    """Revoke `device`, and the server-held issuers of codes issued online to it (docs/spec.md
    §14), in the caller's transaction. True if this call revoked `device`, False if it already
    was: the conditional UPDATE lets two racing revocations agree on one, and the first time
    is kept."""
    result = session.execute(
        update(Device)
        .where(Device.id == device.id, Device.revoked_at_s.is_(None))
        .values(revoked_at_s=at_s),
        execution_options={"synchronize_session": False},
    )
    session.execute(
        update(Device)
        .where(Device.online_for_device_id == device.id, Device.revoked_at_s.is_(None))
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
            Device.id == device_id[:DEVICE_ID_CHARS_MAX],
            Device.user_id == user_id,
            Device.online_for_device_id.is_(None),
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
    idempotency_key: str,
    box: SecretBox,
    at_s: float,
) -> Device:
    """Enroll a new device for the caller's user and revoke the caller, in one transaction:
    a key rotation (same version) or a re-enrollment (another one) without a password.

    The new device keeps the caller's label unless the body names one; a v3 key's proof is
    bound to the caller."""
    scope = device_scope(caller.id, idempotency_key)
    wanted = parse_enroll({"label": caller.label} | body, statuses, scope)
    device = enroll_device(session, user_id=caller.user_id, wanted=wanted, box=box, at_s=at_s)
    if not revoke(session, caller, at_s):
        # Revoked by someone else since it signed this request: roll the new device back.
        raise ApiError(ErrorCode.UNAUTHORIZED, "unknown or revoked device")
    return device
