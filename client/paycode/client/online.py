"""What the wallet does online: enroll, balance, history, pay (docs/api.md, wallet section).

Every call teaches the wallet the server's clock, a refused one too: a signed call refused
because the phone's clock moved is signed again, once, with the offset its refusal taught.
After enrollment no password is kept: calls are signed with the device key
(shared.wallet_auth).
"""

from __future__ import annotations

import platform
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from paycode.appkit.http_client import Response, ServerClient
from paycode.client.merchant_qr import parse_qr_keys
from paycode.client.wallet import Enrollment, Wallet
from paycode.shared import wallet_auth
from paycode.shared.code_keys import read_code_keys
from paycode.shared.codes import ErrorCode
from paycode.shared.enrollment import GrantInfo, b64, new_ed25519_seed
from paycode.shared.errors import ServerRejected, WalletError
from paycode.shared.key_proof import make_proof, session_scope
from paycode.shared.versions.base import DeviceCredential

HISTORY_LIMIT_MAX = 100
REENROLL_CHARS_MAX = 200
"""Server text shown to the user is cut to a line."""
SIGNED_ATTEMPTS_MAX = 2
"""A signed call is sent at most twice: again only when its refusal taught a new clock."""
CLOCK_RETRY_S_MIN = 30.0
"""A refusal that moved the learned offset by at least this much may have been for the clock."""


@dataclass(frozen=True, slots=True)
class DeviceAuth:
    """Signs a wallet request with a device key (docs/api.md, "Signed wallet requests")."""

    device_id: str
    credential: DeviceCredential
    clock_offset_s: float = 0.0
    """server time - local time: requests are timestamped in server time."""

    def sign(self, method: str, path: str, data: bytes) -> dict[str, str]:
        """The signature headers over the exact bytes sent (a paycode.appkit Signer)."""
        timestamp_s = int(time.time() + self.clock_offset_s)
        nonce = secrets.token_hex(16)
        message = wallet_auth.signing_message(method, path, timestamp_s, nonce, data)
        signature = wallet_auth.sign(self.credential, message)
        headers = wallet_auth.SignedHeaders(self.device_id, timestamp_s, nonce, signature)
        return headers.as_dict()


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
    seed, idempotency_key = b"", str(uuid.uuid4())
    if version == "v3":
        seed, public_key = new_ed25519_seed()
        body["public_key"] = b64(public_key)
        body["proof"] = make_proof(seed, version, session_scope(token, idempotency_key))
    reply = client.call(
        "POST", "/v1/wallet/devices", body, bearer=token, idempotency_key=idempotency_key
    )
    info = wallet.add_grant(reply.body, ed25519_seed=seed)
    if "qr_keys" in reply.body:
        wallet.set_qr_keys(parse_qr_keys(reply.body["qr_keys"]))
    wallet.record_clock_offset(reply.clock_offset_s)
    return info


def client_for(wallet: Wallet) -> ServerClient:
    if wallet.server_url is None:
        message = "this wallet has no server: run 'paycode-wallet enroll --server URL'"
        raise WalletError(message, code=ErrorCode.NOT_ENROLLED)
    return ServerClient(wallet.server_url)


def signed_call(
    wallet: Wallet,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    enrollment: Enrollment | None = None,
    idempotency_key: str | None = None,
    client: ServerClient | None = None,
) -> Response:
    """A call signed by `enrollment` (default: the wallet's default device), to `client`
    (default: the wallet's server). Its answer teaches the current code keys (a rotated hiding
    or seal key, docs/spec.md §7). Its answer, or its refusal, re-syncs the clock; a refusal
    that moved the clock is signed afresh and sent once more (same Idempotency-Key: a refused
    request stored nothing)."""
    signer = enrollment or wallet.enrollment()
    client = client or client_for(wallet)
    for attempt in range(1, SIGNED_ATTEMPTS_MAX + 1):
        used_offset_s = wallet.clock_offset_s
        auth = DeviceAuth(signer.device_id, signer.credential, used_offset_s)
        try:
            reply = client.call(
                method, path, body, signer=auth.sign, idempotency_key=idempotency_key
            )
        except ServerRejected as error:
            wallet.record_clock_offset(error.clock_offset_s)
            moved_s = abs(wallet.clock_offset_s - used_offset_s)
            if error.code != ErrorCode.UNAUTHORIZED or moved_s < CLOCK_RETRY_S_MIN:
                raise
            if attempt == SIGNED_ATTEMPTS_MAX:
                raise
            continue
        wallet.record_clock_offset(reply.clock_offset_s)
        # Key material stops here: no caller prints it (a --json answer would show it).
        wallet.set_code_keys(read_code_keys(reply.body.pop("code_keys", None)))
        return reply
    raise AssertionError("unreachable: the loop returns or raises")


def _signed_get(wallet: Wallet, path: str) -> Response:
    return signed_call(wallet, "GET", path)


def balance(wallet: Wallet) -> dict[str, Any]:
    return _signed_get(wallet, "/v1/wallet/balance").body


def history(wallet: Wallet, *, limit: int = 20) -> dict[str, Any]:
    limit = max(1, min(limit, HISTORY_LIMIT_MAX))
    return _signed_get(wallet, f"/v1/wallet/history?limit={limit}").body


def refresh_qr_keys(wallet: Wallet) -> None:
    """Learn the server's current merchant-QR keys (after a rotation)."""
    reply = signed_call(wallet, "GET", "/v1/wallet/qr-keys")
    wallet.set_qr_keys(parse_qr_keys(reply.body.get("keys")))


def pay(
    wallet: Wallet, *, qr_payload: str, amount: str | None, pin: str | None = None
) -> dict[str, Any]:
    """Pay a merchant's QR online; one idempotency key per attempt. Above the password-free
    limits the server answers pin_required: pay again with the PIN."""
    body: dict[str, Any] = {"qr_payload": qr_payload}
    if amount is not None:
        body["amount"] = amount
    if pin is not None:
        body["pin"] = pin
    key = str(uuid.uuid4())
    return signed_call(wallet, "POST", "/v1/wallet/payments", body, idempotency_key=key).body


def issue_code(wallet: Wallet, *, version: str = "v2", pin: str | None = None) -> dict[str, Any]:
    """A single-use code the server issues online for this wallet's user (POST
    /v1/wallet/codes, docs/spec.md §14), for when the wallet cannot make one itself; one
    idempotency key per attempt. With `pin` (v2 only) the code carries USER_VERIFIED."""
    body: dict[str, Any] = {"version": version}
    if pin is not None:
        body["pin"] = pin
    key = str(uuid.uuid4())
    return signed_call(wallet, "POST", "/v1/wallet/codes", body, idempotency_key=key).body
