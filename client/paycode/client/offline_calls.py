"""The offline allowance's calls to the server (docs/offline.md §2.1, §2.4), each signed by a
device of this wallet (client.online.signed_call) and, when it changes anything, idempotent.

    POST /v1/wallet/offline/allowances             take: amount, PIN, four keys and proofs
    POST /v1/wallet/offline/allowances/{id}/return  hand back: per certificate what was used
    GET  /v1/wallet/offline/allowances              the server's list

A request is saved before it is sent (client.offline): after a lost answer the next attempt
sends the very same request with the same Idempotency-Key and hears the stored answer. A
refusal is an answer too: the server set nothing aside, so the request is dropped.

The answer to a take is checked before anything of it is kept: four certificates, each over
the key sent at its place, with caps that add up to the amount asked. A server that sends
something else (a bug, or not our server) must not leave the wallet holding codes no till
would take.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from paycode.client import offline
from paycode.client.offline_state import (
    NOT_YET_USED,
    Allowance,
    HeldCertificate,
    PendingReturn,
    PendingTake,
)
from paycode.client.online import signed_call
from paycode.client.wallet import Enrollment, Wallet
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import CodeMalformed, ServerRejected, WalletError
from paycode.shared.offline import CERT_BYTES, parse_certificate

ALLOWANCES_PATH = "/v1/wallet/offline/allowances"
ALLOWANCE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""`alw_` and 16 hex digits today; anything that is safe in a path and short is kept."""
KEEP_PENDING_CODES = frozenset({ErrorCode.IDEMPOTENCY_IN_PROGRESS, ErrorCode.RATE_LIMITED})
"""Refusals after which the request may still be served: keep it for the next attempt."""
CERT_CHARS = 4 * ((CERT_BYTES + 2) // 3)


@dataclass(frozen=True, slots=True)
class Returned:
    """The server's answer to a hand-back."""

    allowance_id: str
    state: str
    returned_minor: int
    """Back on the balance at once."""
    held_minor: int
    """Kept in escrow until the sweep: what codes already made may still take."""
    balance_minor: int | None


@dataclass(frozen=True, slots=True)
class Taken:
    allowance: Allowance
    balance_minor: int | None
    """The balance after the allowance was set aside, as the server answered it."""


def _invalid(why: str) -> WalletError:
    return WalletError(
        f"the server's allowance answer is unusable ({why}); nothing of it was kept: "
        "the money it set aside returns to your balance when it expires",
        code=ErrorCode.OFFLINE_ANSWER_INVALID,
    )


def _integer(body: Mapping[str, Any], name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _invalid(f"{name} is not a count of seconds or minor units")
    return value


def _certificate(text: object, index: int, pending: PendingTake, public_key: bytes) -> bytes:
    if not isinstance(text, str) or len(text) != CERT_CHARS:
        raise _invalid(f"certificate {index} is not {CERT_BYTES} bytes of base64")
    try:
        raw = base64.b64decode(text, validate=True)
        fields = parse_certificate(raw).fields
    except (binascii.Error, ValueError, CodeMalformed) as error:
        raise _invalid(f"certificate {index} cannot be read") from error
    if fields.offline_pk != public_key:
        raise _invalid(f"certificate {index} is for another key than the one sent")
    if fields.currency != pending.currency:
        raise _invalid(f"certificate {index} is in {fields.currency}")
    caps_ok = 1 <= fields.per_payment_cap_minor <= fields.total_cap_minor
    if not caps_ok or fields.total_cap_minor * len(pending.seeds) != pending.amount_minor:
        raise _invalid(f"certificate {index}'s caps do not add up to the amount asked")
    if fields.count_max < 1 or fields.not_before_s >= fields.expiry_s:
        raise _invalid(f"certificate {index} allows no code")
    return raw


def read_answer(pending: PendingTake, body: Mapping[str, Any]) -> Allowance:
    """The allowance of a 201 answer, its seeds in; offline_answer_invalid for anything that
    does not match the request."""
    allowance_id = body.get("allowance_id")
    if not isinstance(allowance_id, str) or ALLOWANCE_ID.fullmatch(allowance_id) is None:
        raise _invalid("no usable allowance_id")
    if body.get("amount_minor") != pending.amount_minor or body.get("currency") != pending.currency:
        raise _invalid("another amount or currency than asked")
    expires_at_s, returns_at_s = _integer(body, "expires_at_s"), _integer(body, "returns_at_s")
    if returns_at_s < expires_at_s:
        raise _invalid("money returns before the certificates expire")
    texts = body.get("certificates")
    if not isinstance(texts, list) or len(texts) != len(pending.seeds):
        raise _invalid(f"not {len(pending.seeds)} certificates")
    keys = pending.public_keys()
    held = []
    for index, (text, seed) in enumerate(zip(texts, pending.seeds, strict=True)):
        certificate = parse_certificate(_certificate(text, index, pending, keys[index]))
        if certificate.fields.expiry_s != expires_at_s:
            raise _invalid(f"certificate {index} expires at another time than the allowance")
        held.append(HeldCertificate(certificate, seed, next_counter=0, reserved_minor=0))
    if len({h.fields.cert_id for h in held}) != len(held):
        raise _invalid("two certificates share one cert_id")
    return Allowance(
        allowance_id,
        pending.amount_minor,
        pending.currency,
        expires_at_s,
        returns_at_s,
        tuple(held),
        last_used=NOT_YET_USED,
    )


def _signer(wallet: Wallet, pending: PendingTake) -> Enrollment:
    """The device named in the request's proofs: another one's signature would not match."""
    for enrollment in wallet.enrollments().values():
        if enrollment.device_id == pending.device_id:
            return enrollment
    offline.abandon_take(wallet)
    message = (
        f"the device {pending.device_id} that asked for the allowance is no longer in this "
        "wallet: the request was dropped, take the allowance again"
    )
    raise WalletError(message, code=ErrorCode.NOT_ENROLLED)


def take(wallet: Wallet, *, amount_minor: int, currency: str, pin: str) -> Taken:
    """Ask for an allowance (or finish the one asked for and never answered) and keep it.

    The PIN travels in the request only; it is never saved (a retry asks for it again and
    must send the same one, or the server calls it another request)."""
    pending = offline.begin_take(wallet, amount_minor=amount_minor, currency=currency)
    body = {
        "amount_minor": pending.amount_minor,
        "currency": pending.currency,
        "pin": pin,
        "keys": pending.keys_json(),
    }
    try:
        reply = signed_call(
            wallet,
            "POST",
            ALLOWANCES_PATH,
            body,
            enrollment=_signer(wallet, pending),
            idempotency_key=pending.idempotency_key,
        )
    except ServerRejected as error:
        if error.status < 500 and error.code not in KEEP_PENDING_CODES:
            offline.abandon_take(wallet)  # refused: nothing was set aside
        raise
    try:
        allowance = read_answer(pending, reply.body)
    except WalletError:
        offline.abandon_take(wallet)  # the stored answer would come back just as bad
        raise
    offline.finish_take(wallet, allowance)
    return Taken(allowance, _minor_or_none(reply.body.get("balance_minor")))


def _minor_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _returned(allowance_id: str, body: Mapping[str, Any]) -> Returned:
    return Returned(
        allowance_id,
        str(body.get("state", ""))[:32],
        _minor_or_none(body.get("returned_minor")) or 0,
        _minor_or_none(body.get("held_minor")) or 0,
        _minor_or_none(body.get("balance_minor")),
    )


def send_return(wallet: Wallet, pending: PendingReturn) -> Returned:
    """Send one saved hand-back; an answer, refusal included, ends it here."""
    path = f"{ALLOWANCES_PATH}/{quote(pending.allowance_id, safe='')}/return"
    try:
        reply = signed_call(
            wallet, "POST", path, pending.body(), idempotency_key=pending.idempotency_key
        )
    except ServerRejected as error:
        if error.status < 500 and error.code not in KEEP_PENDING_CODES:
            # An answer: retrying would hear it again. The seeds are gone either way, and
            # the server sweeps what is left at returns_at_s.
            offline.finish_return(wallet, pending.allowance_id)
        raise
    offline.finish_return(wallet, pending.allowance_id)
    return _returned(pending.allowance_id, reply.body)


def hand_back(wallet: Wallet, allowance_id: str | None = None) -> list[Returned]:
    """Hand back `allowance_id` (default: every allowance held), after finishing hand-backs
    an earlier run left unanswered. The seeds are deleted before anything is sent."""
    waiting = {pending.allowance_id for pending in offline.pending_returns(wallet)}
    held = [a.allowance_id for a in offline.allowances(wallet) if not a.returning]
    if allowance_id is not None:
        if allowance_id not in held and allowance_id not in waiting:
            raise WalletError(
                f"this wallet holds no allowance {allowance_id[:40]!r}",
                code=ErrorCode.OFFLINE_NONE,
            )
        held = [allowance_id] if allowance_id in held else []
    if not held and not waiting:
        raise WalletError("this wallet holds no offline allowance", code=ErrorCode.OFFLINE_NONE)
    for name in held:
        offline.begin_return(wallet, name)
    return [send_return(wallet, pending) for pending in offline.pending_returns(wallet)]


def list_allowances(wallet: Wallet) -> list[dict[str, Any]]:
    """The server's view: each allowance, its state, what settled and what returned."""
    items = signed_call(wallet, "GET", ALLOWANCES_PATH).body.get("allowances", [])
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
