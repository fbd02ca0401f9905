"""What the wallet does online: enroll, balance, history, pay (docs/api.md, wallet section).

Every call teaches the wallet the server's clock. After enrollment no password is kept: calls
are signed with the device key (shared.wallet_auth).
"""

from __future__ import annotations

import platform
import uuid
from dataclasses import dataclass
from typing import Any

from client.api import DeviceAuth, Response, ServerClient
from client.wallet import Wallet
from shared.enrollment import GrantInfo, b64, new_ed25519_seed
from shared.errors import ServerRejected, WalletError

HISTORY_LIMIT_MAX = 100
REENROLL_CHARS_MAX = 200
"""Server text shown to the user is cut to a line."""


@dataclass(frozen=True, slots=True)
class Reenroll:
    """The server's word that this wallet's code version is being phased out (docs/api.md)."""

    version: str
    """The version to enroll on instead."""
    reason: str


def reenroll_of(body: dict[str, Any]) -> Reenroll | None:
    """The `reenroll` advice of a balance, history or payment answer, if it carries one.

    Advice only: a malformed one is ignored rather than failing the call it rode on."""
    advice = body.get("reenroll")
    if not isinstance(advice, dict):
        return None
    version, reason = advice.get("version"), advice.get("reason")
    if not isinstance(version, str) or not isinstance(reason, str):
        return None
    if not (version.isprintable() and reason.isprintable()):  # printed on the user's terminal
        return None
    return Reenroll(version[:REENROLL_CHARS_MAX], reason[:REENROLL_CHARS_MAX])


@dataclass(frozen=True, slots=True)
class EnrollResult:
    granted: list[GrantInfo]
    clock_offset_s: float


def enroll(
    wallet: Wallet, client: ServerClient, *, user: str, password: str, versions: list[str]
) -> EnrollResult:
    """Log in once, then enroll one device per requested version (each an idempotent POST)."""
    session = client.call("POST", "/v1/wallet/sessions", {"user": user, "password": password})
    token = session.body.get("token")
    if not isinstance(token, str) or not token:
        raise ServerRejected(
            "protocol_error", "server sent no session token", status=session.status
        )
    wallet.set_server(client.base_url, user)
    granted = [_enroll_one(wallet, client, token, version) for version in versions]
    wallet.record_clock_offset(session.clock_offset_s)
    return EnrollResult(granted, wallet.clock_offset_s)


def _enroll_one(wallet: Wallet, client: ServerClient, token: str, version: str) -> GrantInfo:
    body: dict[str, Any] = {"version": version, "label": f"paycode-wallet on {platform.node()}"}
    seed = b""
    if version == "v3":
        seed, public_key = new_ed25519_seed()
        body["public_key"] = b64(public_key)
    reply = client.call(
        "POST", "/v1/wallet/devices", body, bearer=token, idempotency_key=str(uuid.uuid4())
    )
    info = wallet.add_grant(reply.body, ed25519_seed=seed)
    wallet.record_clock_offset(reply.clock_offset_s)
    return info


def client_for(wallet: Wallet) -> ServerClient:
    if wallet.server_url is None:
        message = "this wallet has no server: run 'paycode-wallet enroll --server URL'"
        raise WalletError(message, code="not_enrolled")
    return ServerClient(wallet.server_url)


def _signed_get(wallet: Wallet, path: str) -> Response:
    enrollment = wallet.enrollment()
    auth = DeviceAuth(enrollment.device_id, enrollment.credential, wallet.clock_offset_s)
    reply = client_for(wallet).call("GET", path, device=auth)
    wallet.record_clock_offset(reply.clock_offset_s)
    return reply


def balance(wallet: Wallet) -> dict[str, Any]:
    return _signed_get(wallet, "/v1/wallet/balance").body


def history(wallet: Wallet, *, limit: int = 20) -> dict[str, Any]:
    limit = max(1, min(limit, HISTORY_LIMIT_MAX))
    return _signed_get(wallet, f"/v1/wallet/history?limit={limit}").body


def pay(wallet: Wallet, *, qr_payload: str, amount: str | None) -> dict[str, Any]:
    """Pay a merchant's collection QR online; one idempotency key per attempt."""
    enrollment = wallet.enrollment()
    auth = DeviceAuth(enrollment.device_id, enrollment.credential, wallet.clock_offset_s)
    body: dict[str, Any] = {"qr_payload": qr_payload}
    if amount is not None:
        body["amount"] = amount
    reply = client_for(wallet).call(
        "POST", "/v1/wallet/payments", body, device=auth, idempotency_key=str(uuid.uuid4())
    )
    wallet.record_clock_offset(reply.clock_offset_s)
    return reply.body
