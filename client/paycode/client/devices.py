"""The wallet's devices online: list them, revoke one, rotate keys, re-enroll off a version.

A user may hold several devices: one per enrolled code version on each phone. Any of them can
be revoked from any wallet of the same user (a lost phone is revoked from the new one). A
rotation enrolls a new device and revokes the signing one in one server transaction
(docs/api.md, "Manage devices"), with no password: the device's own signature is the proof.

The local keystore never loses the old key before the new grant is saved: the rotation request
(its Idempotency-Key and, for v3, the new private key) is saved first, so a crash or a lost
answer is finished by running the command again, which sends the same request and gets the
same grant back, even though the old device is revoked by then.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.appkit.http_client import ServerClient
from paycode.client import online
from paycode.client.wallet import Enrollment, PendingRotation, Wallet, live_versions
from paycode.shared.codes import ErrorCode
from paycode.shared.enrollment import b64, new_ed25519_seed
from paycode.shared.errors import ServerRejected, WalletError
from paycode.shared.key_proof import device_scope, make_proof

DEVICES_PATH = "/v1/wallet/devices"
ROTATE_PATH = f"{DEVICES_PATH}/rotate"
DEVICE_ID_CHARS_MAX = 32
TEXT_CHARS_MAX = 64
"""Server text a listing shows (labels) is cut to this and made printable."""
KEEP_PENDING_CODES = frozenset({ErrorCode.IDEMPOTENCY_IN_PROGRESS})
"""Refusals after which the rotation may still have happened: keep it for a retry."""


@dataclass(frozen=True, slots=True)
class DeviceListing:
    items: list[dict[str, Any]]
    """The server's devices, each with `this_wallet` (the version this wallet holds it as)."""
    reenroll: online.Reenroll | None


@dataclass(frozen=True, slots=True)
class Revocation:
    device_id: str
    already_revoked: bool
    """The server had revoked it before this call (by this wallet, another or the operator)."""
    removed_version: str | None = None
    """The version this wallet held the device as, now forgotten here; None: not this wallet's."""

    def as_json(self) -> dict[str, object]:
        return {
            "device_id": self.device_id,
            "revoked": True,
            "already_revoked": self.already_revoked,
            "removed_from_wallet": self.removed_version,
        }


@dataclass(frozen=True, slots=True)
class Rotation:
    version: str
    """The version the old device was enrolled on."""
    old_device_id: str
    new_device_id: str
    new_version: str

    def as_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "old_device_id": self.old_device_id,
            "new_device_id": self.new_device_id,
            "new_version": self.new_version,
        }


@dataclass(frozen=True, slots=True)
class Reenrollment:
    rotated: list[Rotation] = field(default_factory=list)
    """Devices moved to the advised version: a new device there, the old one revoked."""
    dropped: list[Revocation] = field(default_factory=list)
    """Devices revoked because this wallet already holds the advised version."""

    def as_json(self) -> dict[str, object]:
        return {
            "rotated": [move.as_json() for move in self.rotated],
            "dropped": [drop.as_json() for drop in self.dropped],
        }


def printable(value: object, chars_max: int = TEXT_CHARS_MAX) -> str:
    """Server text fit for a terminal: no control characters, at most one short line."""
    text = str(value)[:chars_max]
    return "".join(char if char.isprintable() else "?" for char in text)


# --- list -----------------------------------------------------------------------------------


def list_devices(wallet: Wallet) -> DeviceListing:
    """The user's devices as the server knows them, this wallet's own marked."""
    resume_rotations(wallet)
    reply = online.signed_call(wallet, "GET", DEVICES_PATH)
    own = {item.device_id: version for version, item in wallet.enrollments().items()}
    raw = reply.body.get("items")
    items = [
        item | {"this_wallet": own.get(str(item.get("device_id")))}
        for item in (raw if isinstance(raw, list) else [])
        if isinstance(item, dict)
    ]
    return DeviceListing(items, online.reenroll_of(reply.body))


# --- revoke ---------------------------------------------------------------------------------


def check_device_id(device_id: str) -> str:
    if not 1 <= len(device_id) <= DEVICE_ID_CHARS_MAX or not device_id.isascii():
        raise WalletError(
            f"a device id has 1-{DEVICE_ID_CHARS_MAX} ASCII characters, e.g. dev_0123abcd",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    if not device_id.isprintable() or "/" in device_id:
        message = "a device id has no spaces, slashes or control characters"
        raise WalletError(message, code=ErrorCode.INVALID_ARGUMENT)
    return device_id


def own_version(wallet: Wallet, device_id: str) -> str | None:
    """The version this wallet holds `device_id` as, if it is one of its own."""
    for version, enrollment in wallet.enrollments().items():
        if enrollment.device_id == device_id:
            return version
    return None


def revoke(wallet: Wallet, device_id: str) -> Revocation:
    """Revoke one of the user's devices; one of this wallet's own is also forgotten here.

    An own device is revoked with another of this wallet's devices when it has one, so the
    call still works when the server revoked it already; else it revokes itself."""
    check_device_id(device_id)
    version = own_version(wallet, device_id)
    others = [v for v in wallet.enrollments() if v != version]
    signer = wallet.enrollment(others[0] if version is not None and others else None)
    path = f"{DEVICES_PATH}/{quote(device_id, safe='')}/revoke"
    try:
        reply = online.signed_call(
            wallet, "POST", path, {}, enrollment=signer, idempotency_key=str(uuid.uuid4())
        )
    except ServerRejected as error:
        if version is None or error.code != ErrorCode.UNAUTHORIZED or signer.device_id != device_id:
            raise
        # The server refuses this device's own signature: it is revoked (or unknown) there.
        wallet.remove_enrollment(version)
        return Revocation(device_id, already_revoked=True, removed_version=version)
    if version is not None:
        wallet.remove_enrollment(version)
    already = reply.body.get("already_revoked") is True
    return Revocation(device_id, already_revoked=already, removed_version=version)


# --- rotate and re-enroll -------------------------------------------------------------------


def _public_key(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def _pending(wallet: Wallet, version: str, target: str) -> PendingRotation:
    """The saved rotation of `version` to `target`, or a new one, saved before it is sent."""
    pending = wallet.pending_rotation(version)
    if pending is not None and pending.target == target:
        return pending
    seed = new_ed25519_seed()[0] if target == "v3" else b""
    pending = PendingRotation(version, target, str(uuid.uuid4()), seed)
    wallet.begin_rotation(pending)
    return pending


def rotate_one(wallet: Wallet, version: str, target: str | None = None) -> Rotation:
    """Replace this wallet's `version` device by a new one on `target` (default: the same
    version): new key, old device revoked, keystore updated in one save."""
    old = wallet.enrollment(version)
    pending = _pending(wallet, version, target or version)
    body: dict[str, Any] = {"version": pending.target}
    if pending.seed:
        body["public_key"] = b64(_public_key(pending.seed))
        # Deterministic (Ed25519): a resumed rotation sends the very same body again.
        scope = device_scope(old.device_id, pending.idempotency_key)
        body["proof"] = make_proof(pending.seed, pending.target, scope)
    try:
        reply = online.signed_call(
            wallet,
            "POST",
            ROTATE_PATH,
            body,
            enrollment=old,
            idempotency_key=pending.idempotency_key,
        )
    except ServerRejected as error:
        if error.status < 500 and error.code not in KEEP_PENDING_CODES:
            wallet.abandon_rotation(version)  # refused: nothing changed on the server
        raise
    info = wallet.finish_rotation(version, reply.body)
    return Rotation(version, old.device_id, info.device_id, info.version)


def resume_rotations(wallet: Wallet) -> list[Rotation]:
    """Finish rotations a crash or a lost answer left half done (at most one per version)."""
    finished = []
    for version in wallet.enrollments():
        pending = wallet.pending_rotation(version)
        if pending is not None:
            finished.append(rotate_one(wallet, version, pending.target))
    return finished


def rotate(wallet: Wallet, versions: list[str] | None = None) -> list[Rotation]:
    """New keys for each enrolled version (or those named): `paycode-wallet rotate`."""
    enrolled = list(wallet.enrollments())
    if not enrolled:
        wallet.enrollment()  # raises not_enrolled with the usual advice
    wanted = versions or enrolled
    for version in wanted:
        wallet.enrollment(version)  # not enrolled: refuse before anything changes
    resumed = resume_rotations(wallet)
    touched = {r.version for r in resumed} | {r.new_version for r in resumed}
    current = wallet.enrollments()
    done = [rotate_one(wallet, v) for v in wanted if v in current and v not in touched]
    return [*resumed, *done]


def reenroll(wallet: Wallet) -> Reenrollment:
    """Follow the server's advice: move each of this wallet's devices whose code version is
    deprecated or retired to the advised version. When the wallet already holds that version,
    the old device is only revoked; otherwise it is rotated onto it."""
    listing = list_devices(wallet)
    own = [
        item
        for item in listing.items
        if isinstance(item.get("this_wallet"), str) and item.get("revoked") is False
    ]
    result = Reenrollment()
    for item in sorted(own, key=lambda item: str(item["this_wallet"])):  # v1 first
        version, advice = item.get("this_wallet"), item.get("reenroll")
        target = advice.get("version") if isinstance(advice, dict) else None
        if not isinstance(version, str) or target not in live_versions() or target == version:
            continue
        assert isinstance(target, str)
        if target in wallet.enrollments():
            result.dropped.append(revoke(wallet, str(item["device_id"])))
        else:
            result.rotated.append(rotate_one(wallet, version, target))
    return result


def revoke_replaced(
    wallet: Wallet, replaced: dict[str, Enrollment], old_server: str | None
) -> list[str]:
    """Each replaced device revokes itself at the server it was enrolled with (its key was
    kept in memory for this): re-enrolling never leaves a live device behind. A failure names
    the devices still live, for `revoke` from another wallet or the operator."""
    revoked: list[str] = []
    for enrollment in replaced.values():
        path = f"{DEVICES_PATH}/{quote(enrollment.device_id, safe='')}/revoke"
        try:
            online.signed_call(
                wallet, "POST", path, {}, enrollment=enrollment,
                idempotency_key=str(uuid.uuid4()), client=ServerClient(old_server or ""),
            )  # fmt: skip
        except ServerRejected as error:
            if error.code == ErrorCode.UNAUTHORIZED:
                continue  # revoked already (the server refuses a revoked device's signature)
            left = [e.device_id for e in replaced.values() if e.device_id not in revoked]
            raise ServerRejected(
                error.code,
                f"enrolled again, but could not revoke the replaced devices {', '.join(left)}: "
                f"{error.message}; revoke them with 'paycode-wallet revoke ID'",
                status=error.status,
            ) from error
        revoked.append(enrollment.device_id)
    return revoked
