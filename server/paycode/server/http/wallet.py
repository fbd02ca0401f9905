"""/v1/wallet: the HTTP contract the wallet library speaks (docs/api.md, wallet part).

A password is used once, to get a short-lived token that can only enroll devices. After that
every call is signed by an enrolled device, so a phone keeps no password or bearer token.
Every body carries `server_time`, from which the wallet learns its clock offset (spec §9).
The logic lives in server/paycode/server/wallets/; this module parses requests and shapes answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from paycode.server.database.engine import db
from paycode.server.database.models import Device, IdempotencyRecord
from paycode.server.http.idempotency import require_key, respond, run_keyed_post, run_once
from paycode.server.http.problems import rate_limited
from paycode.server.http.request_fields import json_object, request_sha256, string_field
from paycode.server.http.signed_requests import (
    check_timestamp,
    remember_nonce,
    signed_headers,
    signed_path,
)
from paycode.server.operations import lifecycle
from paycode.server.operations.observability import annotate
from paycode.server.points.redemption import points_balance
from paycode.server.safety import keyring
from paycode.server.safety.guard import AttemptRefused, unlock_device
from paycode.server.safety.passwords import PASSWORD_CHARS_MAX
from paycode.server.safety.qr_keys import load_qr_keys
from paycode.server.services import config, directory, secret_box
from paycode.server.wallets import devices, sessions, statements
from paycode.shared.code_keys import build_code_keys
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import ApiError
from paycode.shared.key_proof import session_scope
from paycode.shared.points import POINTS_ASSET
from paycode.shared.wallet_auth import signature_valid, signing_message

bp = Blueprint("wallet", __name__, url_prefix="/v1/wallet")


def password_blocked(error: AttemptRefused) -> Response:
    """The reply to an AttemptRefused: register it on each blueprint that checks passwords."""
    return rate_limited(error.wait_s, "too many wrong passwords")


bp.register_error_handler(AttemptRefused, password_blocked)

DEVICE_HEADERS = ("Paycode-Device", "Paycode-Timestamp", "Paycode-Nonce", "Paycode-Signature")
DEVICE_ID_CHARS_MAX = 32


def _ok(body: dict[str, object], status: int = 200) -> Response:
    """A JSON answer stamped with the server clock at the moment it is sent."""
    response = jsonify({**body, "server_time": sessions.now_s()})
    response.status_code = status
    return response


@bp.after_request
def stamp_problems(response: Response) -> Response:
    """Problems carry `server_time` too (docs/api.md: every body does), so a wallet refused
    for a wrong clock can still learn the server's. The wallet service's clock decides."""
    if response.mimetype == "application/problem+json":
        body = response.get_json(silent=True)
        if isinstance(body, dict):
            body["server_time"] = sessions.now_s()
            response.set_data(json.dumps(body))
    return response


def _signed_path() -> str:
    """The path with query as the wallet signed it (server.auth.signed_path)."""
    return signed_path()


def authenticate_device(session: Session, now_s: float, *, revoked_ok: bool = False) -> Device:
    """The enrolled, unrevoked device that signed this request; `unauthorized` otherwise.

    The nonce is remembered last, inside the caller's transaction: a request refused for any
    reason leaves no trace, and a verified one can never be replayed. `revoked_ok`: a revoked
    device passes too, and the caller must check it (see `_retry_of_revoked`).
    """
    device_id, timestamp, nonce, signature = signed_headers(DEVICE_HEADERS)
    timestamp_s = check_timestamp(timestamp, now_s)
    device = session.get(Device, device_id[:DEVICE_ID_CHARS_MAX])
    if device is None or (device.revoked_at_s is not None and not revoked_ok):
        raise ApiError(ErrorCode.UNAUTHORIZED, "unknown or revoked device")
    if device.online_for_device_id is not None:
        # An issuer of codes issued online: its key never left the server, so no phone signs
        # with it (docs/spec.md §14); answered as an unknown device.
        raise ApiError(ErrorCode.UNAUTHORIZED, "unknown or revoked device")
    message = signing_message(
        request.method, _signed_path(), timestamp_s, nonce, request.get_data(cache=True)
    )
    key = devices.device_verify_key(device, secret_box())
    if not key or not signature_valid(device.version, key, message, signature):
        raise ApiError(ErrorCode.UNAUTHORIZED, "request signature does not verify")
    annotate(device_id=device.id)  # the request's log line names who signed
    scope = f"device:{device.id}"
    remember_nonce(session, scope, nonce, now_s)
    devices.forget_old_nonces(session, scope, now_s)
    if device.locked_at_s is not None:
        # Locked after forged codes named it (paycode.server.safety.guard); its own key just
        # signed, so
        # the phone is in its owner's hands: this online contact is the re-sync that unlocks.
        unlock_device(session.connection(), device.id)
        session.refresh(device)
    devices.reset_drift(session, device)  # the reply re-syncs the wallet's clock
    return device


DeviceAction = Callable[[Session, Device, dict[str, Any], float], tuple[int, dict[str, Any]]]


def device_idempotent_post(action: DeviceAction) -> Response:
    """A device-signed POST: signature, Idempotency-Key, JSON body, then `action` run once
    (the wallet's twin of charges.signed_idempotent_post)."""
    now_s = sessions.now_s()
    with db.transaction() as session:
        device = authenticate_device(session, now_s)
        status, reply, replayed = run_keyed_post(
            session,
            scope=f"device:{device.id}",
            now_s=now_s,
            work=lambda body: action(session, device, body, now_s),
        )
    return respond(status, reply | {"server_time": now_s}, replayed)


def checked_password(
    user_name: str, now_s: float, found: tuple[str, str] | None, password: str
) -> str:
    """sessions.check_password between an attempt reserved on the user name's and the client
    address's counters and its settlement, each in its own short transaction (never a lock
    over scrypt); `rate_limited` (AttemptRefused) unchecked when either is full or blocked."""
    scopes = sessions.login_scopes(user_name, request.remote_addr)
    with db.transaction() as session:
        sessions.reserve_login(session, scopes, now_s)
    try:
        user_id = sessions.check_password(found, password)
    except ApiError:
        with db.transaction() as session:
            sessions.settle_login(session, scopes, now_s, right=False)
        raise
    with db.transaction() as session:
        sessions.settle_login(session, scopes, now_s, right=True)
    return user_id


@bp.post("/sessions")
def create_session() -> Response:
    """Log in: the password is checked between two short transactions, never holding a lock."""
    body = json_object()
    user = string_field(body, "user", max_chars=sessions.USER_CHARS_MAX)
    password = string_field(body, "password", max_chars=PASSWORD_CHARS_MAX)
    assert user is not None and password is not None
    now_s = sessions.now_s()
    with db.transaction() as session:
        found = sessions.find_login(session, user)
    user_id = checked_password(user, now_s, found, password)
    with db.transaction() as session:
        token, expires_at_s = sessions.open_session(
            session, user_id, sessions.now_s(), config().session_ttl_s
        )
    return _ok({"token": token, "expires_at": expires_at_s}, 201)


@bp.post("/devices")
def enroll_device() -> Response:
    """Enroll one device; the Idempotency-Key makes a retry return the same grant."""
    now_s = sessions.now_s()
    with db.transaction() as session:
        authorization = request.headers.get("Authorization", "")
        user_id = sessions.session_user(session, authorization, now_s)
        key = require_key()
        # A v3 key's proof of possession is bound to this session (as session_user reads it).
        scope = session_scope(authorization.partition(" ")[2].strip(), key)
        wanted = devices.parse_enroll(json_object(), _statuses(), scope)
        current = _enrollment_keys(session, wanted.version)

        def work() -> tuple[int, dict[str, object]]:
            device = devices.enroll_device(
                session, user_id=user_id, wanted=wanted, box=secret_box(), at_s=now_s
            )
            return 201, {"device_id": device.id}

        status, body, replayed = run_once(
            session,
            scope=f"session:{user_id}",
            key=key,
            request_hash=request_sha256(),
            now_s=now_s,
            work=work,
        )
        if status == 201:
            device_id = str(body["device_id"])
            body = devices.grant_for(session, device_id, secret_box(), current, sessions.now_s())
            body["qr_keys"] = load_qr_keys(session, secret_box()).public_json()
    return respond(status, body, replayed)


def _enrollment_keys(session: Session, version: str) -> dict[str, bytes]:
    """The current hiding keys and seal public key; a server without them was never set up."""
    _, current = keyring.load_keys(session, secret_box())
    if ("seal_public" if version == "v3" else version) not in current:
        raise ApiError(
            ErrorCode.INTERNAL_ERROR,
            "the server's verifier keys are missing; run 'paycode-server init-db'",
            status=500,
        )
    return current


def _statuses() -> lifecycle.Statuses:
    return lifecycle.load_statuses(db.engine, time.monotonic(), config().statuses_ttl_s)


def code_keys(session: Session, device: Device) -> dict[str, object]:
    """`{"code_keys": [...]}`: the keys the caller's user's live devices make codes with now
    (docs/spec.md §7). A wallet learns a rotated hiding or seal key from any signed call."""
    versions = set(
        session.scalars(
            select(Device.version)
            .where(
                Device.user_id == device.user_id,
                Device.revoked_at_s.is_(None),
                Device.online_for_device_id.is_(None),
            )
            .distinct()
        )
    )
    keys = keyring.load_keyring(session, secret_box())
    return {"code_keys": build_code_keys(keys.current, keys.current_ids, versions)}


def reenroll(device: Device) -> dict[str, object]:
    """`{"reenroll": {...}}` when the calling device's code version is deprecated or retired:
    the wallet's online calls are the only way to reach a phone that otherwise works offline."""
    advice = lifecycle.reenroll_advice(device.version, _statuses())
    return {} if advice is None else {"reenroll": advice}


@bp.get("/balance")
def balance() -> Response:
    with db.transaction() as session:
        device = authenticate_device(session, sessions.now_s())
        accounts = statements.balances(session, device.user_id)
        points = {"asset": POINTS_ASSET, "balance": points_balance(session, device.user_id)}
        learned = code_keys(session, device)
    return _ok({"accounts": accounts, "points": points, **reenroll(device), **learned})


@bp.get("/history")
def history() -> Response:
    with db.transaction() as session:
        device = authenticate_device(session, sessions.now_s())
        limit = statements.parse_limit(request.args.get("limit"))
        items = statements.history(session, device.user_id, limit)
        learned = code_keys(session, device)
    return _ok({"items": items, **reenroll(device), **learned})


# --- device lifecycle: list, revoke, rotate (docs/api.md, "Manage devices") -------------------


@bp.get("/devices")
def list_devices() -> Response:
    """The calling user's devices; `current` marks the one that signed this request."""
    with db.transaction() as session:
        caller = authenticate_device(session, sessions.now_s())
        statuses = _statuses()
        items = [
            devices.wallet_device_json(row, statuses, caller.id)
            for row in devices.user_devices(session, caller.user_id)
        ]
        learned = code_keys(session, caller)
    return _ok({"items": items, **reenroll(caller), **learned})


def _retry_of_revoked(session: Session, caller: Device) -> None:
    """A revoked device may only fetch the stored answer of a request it made while it was live:
    a rotation or self-revocation whose answer was lost on the way (same Idempotency-Key)."""
    if caller.revoked_at_s is None:
        return
    if session.get(IdempotencyRecord, (f"device:{caller.id}", require_key())) is None:
        raise ApiError(ErrorCode.UNAUTHORIZED, "unknown or revoked device")


@bp.post("/devices/<device_id>/revoke")
def revoke_device(device_id: str) -> Response:
    """Revoke one of the caller's user's devices (itself included); idempotent."""
    now_s = sessions.now_s()
    with db.transaction() as session:
        caller = authenticate_device(session, now_s, revoked_ok=True)
        _retry_of_revoked(session, caller)
        status, reply, replayed = run_keyed_post(
            session,
            scope=f"device:{caller.id}",
            now_s=now_s,
            work=lambda _body: (200, devices.revoke_own(session, caller, device_id, now_s)),
        )
        revoked = session.get(Device, str(reply.get("device_id", "")))
    if status < 300 and revoked is not None:
        directory().forget_device(revoked.version, revoked.handle)
    return respond(status, reply | {"server_time": now_s}, replayed)


@bp.post("/devices/rotate")
def rotate_device() -> Response:
    """A new device for the caller's user, on the version asked for, and the caller revoked,
    in one transaction. Answers the new device's grant, like POST /devices."""
    now_s = sessions.now_s()
    with db.transaction() as session:
        caller = authenticate_device(session, now_s, revoked_ok=True)
        _retry_of_revoked(session, caller)
        statuses = _statuses()

        def work(body: dict[str, object]) -> tuple[int, dict[str, object]]:
            device = devices.rotate(
                session,
                caller,
                dict(body),
                statuses=statuses,
                idempotency_key=require_key(),
                box=secret_box(),
                at_s=now_s,
            )
            return 201, {"device_id": device.id}

        status, reply, replayed = run_keyed_post(
            session, scope=f"device:{caller.id}", now_s=now_s, work=work
        )
        if status == 201:
            reply = _rotation_grant(session, str(reply["device_id"]), caller.id)
    if status == 201:
        directory().forget_device(caller.version, caller.handle)
        return respond(status, reply, replayed)
    return respond(status, reply | {"server_time": now_s}, replayed)


def _rotation_grant(session: Session, device_id: str, revoked_id: str) -> dict[str, object]:
    """The new device's grant, rebuilt from its row (the key's record keeps only its id)."""
    device = session.get(Device, device_id)
    if device is None or device.revoked_at_s is not None:
        raise ApiError(ErrorCode.DEVICE_REVOKED, "the device this rotation enrolled was revoked")
    current = _enrollment_keys(session, device.version)
    grant = devices.grant_for(session, device.id, secret_box(), current, sessions.now_s())
    return grant | {"revoked_device_id": revoked_id}
