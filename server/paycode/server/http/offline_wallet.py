"""/v1/wallet/offline/allowances: a wallet sets money aside to spend offline, hands it back, and
lists what it took (docs/offline.md §2, docs/api.md "Offline allowances").

Taking an allowance pre-authorises PIN-less offline spending, so it always needs the PIN,
checked before the transaction and never kept (the Idempotency-Key is bound to the body
without it). Each fresh key must prove that the wallet holds it: without a proof a wallet could
have the server certify a key it does not hold. The money moves in paycode.server.books.escrow
and escrow_return; this module parses requests and shapes answers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import string
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.orm import Session

from paycode.server.books import escrow, escrow_return, ledger
from paycode.server.books.allowance_list import allowances_of
from paycode.server.charge.step_up import parse_pin
from paycode.server.database.engine import db
from paycode.server.database.models import Device, User
from paycode.server.http.idempotency import require_key, respond, run_once
from paycode.server.http.pin_check import PinBlocked, PinWrong, check_pin, pin_blocked, pin_wrong
from paycode.server.http.request_fields import json_object
from paycode.server.http.wallet import (
    authenticate_device,
    device_idempotent_post,
    stamp_problems,
)
from paycode.server.safety.offline_keys import load_offline_keys
from paycode.server.safety.offline_settings import CERTIFICATES_PER_ALLOWANCE
from paycode.server.services import config, secret_box
from paycode.server.wallets import sessions
from paycode.shared.codes import ErrorCode
from paycode.shared.emv.qr_signature import from_b64url
from paycode.shared.errors import ApiError, WeakKey
from paycode.shared.keycheck import check_ed25519_public
from paycode.shared.offline_proof import PROOF_BYTES, check_offline_key_proof

bp = Blueprint("offline_wallet", __name__, url_prefix="/v1/wallet/offline")
bp.after_request(stamp_problems)
bp.register_error_handler(PinBlocked, pin_blocked)
bp.register_error_handler(PinWrong, pin_wrong)

PUBLIC_KEY_BYTES = 32
CERT_ID_HEX_CHARS = 32
ALLOWANCE_ID_CHARS_MAX = 32
AMOUNT_MINOR_MAX = 2**53
"""Any amount above the ladder is refused by it; this only keeps absurd integers out."""
_TAKE_FIELDS = frozenset({"amount_minor", "currency", "pin", "keys"})
_KEY_FIELDS = frozenset({"public_key", "proof"})
_USE_FIELDS = frozenset({"cert_id", "counters_used", "reserved_minor"})
_HEX = frozenset(string.hexdigits.lower())


@dataclass(frozen=True, slots=True)
class TakeRequest:
    amount_minor: int
    currency: str
    pin: str | None
    keys: tuple[tuple[bytes, bytes], ...]
    """(public key, proof) per certificate, in the order asked."""


def _invalid(detail: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_REQUEST, detail)


def _only(body: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise _invalid(f"{where} has unknown field {extra[0][:40]!r}")


def _integer(value: object, name: str, high: int) -> int:
    # bool is an int in Python, never in JSON's sense
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise _invalid(f"'{name}' must be a whole number within 0..{high}")
    return value


def _b64url_bytes(value: object, name: str, size: int) -> bytes:
    raw = from_b64url(value) if isinstance(value, str) and len(value) <= 2 * size else None
    if raw is None or len(raw) != size:
        raise _invalid(f"'{name}' must be {size} bytes of unpadded base64url")
    return raw


def parse_take(body: dict[str, Any]) -> TakeRequest:
    """The allowance request, strictly: invalid_request for any other shape."""
    _only(body, _TAKE_FIELDS, "the body")
    amount_minor = _integer(body.get("amount_minor"), "amount_minor", AMOUNT_MINOR_MAX)
    currency = body.get("currency")
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isascii()):
        raise _invalid("'currency' must be an ISO 4217 code such as 'CNY'")
    if not currency.isalpha() or not currency.isupper():
        raise _invalid("'currency' must be an ISO 4217 code such as 'CNY'")
    pin = body.get("pin")
    keys = body.get("keys")
    if not isinstance(keys, list) or len(keys) != CERTIFICATES_PER_ALLOWANCE:
        raise _invalid(f"'keys' must list exactly {CERTIFICATES_PER_ALLOWANCE} keys")
    parsed = []
    for entry in keys:
        if not isinstance(entry, dict):
            raise _invalid("each of 'keys' must be an object")
        _only(entry, _KEY_FIELDS, "a key")
        public_key = _b64url_bytes(entry.get("public_key"), "public_key", PUBLIC_KEY_BYTES)
        proof = _b64url_bytes(entry.get("proof"), "proof", PROOF_BYTES)
        parsed.append((public_key, proof))
    return TakeRequest(
        amount_minor, currency, None if pin is None else parse_pin(pin), tuple(parsed)
    )


def check_keys(wanted: TakeRequest, device_id: str, idempotency_key: str) -> None:
    """Each key canonical and of large order (weak_key), offered once (weak_key), and signed
    over this device, this request and its place (key_proof_invalid)."""
    seen = set()
    for index, (public_key, proof) in enumerate(wanted.keys):
        try:
            check_ed25519_public(public_key)
        except WeakKey as error:
            raise ApiError(ErrorCode.WEAK_KEY, f"key {index}: {error.message}") from None
        if public_key in seen:
            raise ApiError(ErrorCode.WEAK_KEY, f"key {index} is offered twice")
        seen.add(public_key)
        if not check_offline_key_proof(public_key, proof, device_id, idempotency_key, index):
            raise ApiError(
                ErrorCode.KEY_PROOF_INVALID,
                f"key {index}: 'proof' must be its signature over this request "
                "(docs/offline.md §2.1)",
            )


def _hash_without_pin(body: dict[str, Any]) -> str:
    """A retry with another PIN is the same request; a PIN's hash is never kept."""
    kept = {name: value for name, value in body.items() if name != "pin"}
    canonical = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{request.method} {request.path}\n{canonical}".encode()).hexdigest()


@bp.post("/allowances")
def take_allowance() -> Response:
    """Move one ladder amount into escrow and certify the wallet's four fresh keys."""
    now_s = sessions.now_s()
    key = require_key()
    body = json_object()
    wanted = parse_take(body)
    if wanted.pin is None:
        with db.transaction() as session:
            authenticate_device(session, now_s)  # a stranger learns no more than unauthorized
            raise ApiError(ErrorCode.PIN_REQUIRED, "an offline allowance needs the payment PIN")
    device_id = check_pin(wanted.pin, now_s)[1]
    check_keys(wanted, device_id, key)
    settings = config().offline
    keys = load_offline_keys(db.engine, secret_box(), now_s=now_s, publish_s=settings.key_publish_s)

    def work(session: Session, device: Device) -> tuple[int, dict[str, Any]]:
        user = session.get(User, device.user_id)
        assert user is not None
        issued = escrow.fund_allowance(
            session,
            user=user,
            device_id=device.id,
            currency=wanted.currency,
            amount_minor=wanted.amount_minor,
            public_keys=[public_key for public_key, _ in wanted.keys],
            keys=keys,
            settings=settings,
            days=config().limits,
            now_s=now_s,
        )
        payer = ledger.account(session, "user", user.id, wanted.currency)
        assert payer is not None, "fund_allowance debited it"
        return 201, {
            "allowance_id": issued.allowance_id,
            "amount_minor": issued.amount_minor,
            "currency": issued.currency,
            "expires_at_s": issued.expires_at_s,
            "returns_at_s": issued.returns_at_s,
            "certificates": [base64.b64encode(raw).decode() for raw in issued.certificates],
            "balance_minor": ledger.balance_minor(session, payer.id),
        }

    with db.transaction() as session:
        device = session.get(Device, device_id)
        if device is None or device.revoked_at_s is not None:
            # Revoked between the PIN check and now: the signature no longer stands.
            raise ApiError(ErrorCode.UNAUTHORIZED, "unknown or revoked device")
        status, reply, replayed = run_once(
            session,
            scope=f"device:{device.id}",
            key=key,
            request_hash=_hash_without_pin(body),
            now_s=now_s,
            work=lambda: work(session, device),
        )
    return respond(status, reply | {"server_time": now_s}, replayed)


def parse_uses(body: dict[str, Any]) -> list[escrow_return.CertificateUse]:
    """The hand-back body, strictly; the caps of each certificate are escrow_return's check."""
    _only(body, frozenset({"certificates"}), "the body")
    entries = body.get("certificates")
    if not isinstance(entries, list) or not 1 <= len(entries) <= CERTIFICATES_PER_ALLOWANCE:
        raise _invalid(
            f"'certificates' must list the allowance's {CERTIFICATES_PER_ALLOWANCE} certificates"
        )
    uses = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise _invalid("each of 'certificates' must be an object")
        _only(entry, _USE_FIELDS, "a certificate")
        cert_id = entry.get("cert_id")
        if not (isinstance(cert_id, str) and len(cert_id) == CERT_ID_HEX_CHARS):
            raise _invalid(f"'cert_id' must be {CERT_ID_HEX_CHARS} lower-case hex characters")
        if not set(cert_id) <= _HEX:
            raise _invalid(f"'cert_id' must be {CERT_ID_HEX_CHARS} lower-case hex characters")
        counters_used = _integer(entry.get("counters_used"), "counters_used", 255)
        reserved_minor = _integer(entry.get("reserved_minor"), "reserved_minor", AMOUNT_MINOR_MAX)
        uses.append(escrow_return.CertificateUse(cert_id, counters_used, reserved_minor))
    return uses


@bp.post("/allowances/<allowance_id>/return")
def return_allowance(allowance_id: str) -> Response:
    """Hand an allowance back: escrow keeps what the codes made may claim, the rest returns."""
    wanted_id = allowance_id if len(allowance_id) <= ALLOWANCE_ID_CHARS_MAX else ""

    def work(
        session: Session, device: Device, body: dict[str, Any], now_s: float
    ) -> tuple[int, dict[str, Any]]:
        uses = parse_uses(body)
        done = escrow_return.return_allowance(
            session, user_id=device.user_id, allowance_id=wanted_id, uses=uses, now_s=now_s
        )
        return 200, {
            "allowance_id": done.allowance_id,
            "state": "returned",
            "returned_minor": done.returned_minor,
            "held_minor": done.held_minor,
            "balance_minor": done.balance_minor,
        }

    return device_idempotent_post(work)


@bp.get("/allowances")
def list_allowances() -> Response:
    """The user's allowances (any of its devices took), newest first, at most 50."""
    now_s = sessions.now_s()
    with db.transaction() as session:
        device = authenticate_device(session, now_s)
        views = allowances_of(session, device.user_id)
    return jsonify(allowances=[view.as_json() for view in views], server_time=now_s)
