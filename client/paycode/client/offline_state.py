"""What the wallet keeps of its offline allowances, and how the keystore document spells it.

docs/offline.md §3.5. The `offline` part of the wallet document (client.wallet.Wallet
.editing_section):

    {"allowances": {ALLOWANCE_ID: {"amount_minor", "currency", "expires_at_s", "returns_at_s",
                                   "last_used", "returning",
                                   "certificates": [{"cert", "seed", "next_counter",
                                                     "reserved_minor"}, ... 4]}},
     "pending_take": {"key", "device_id", "amount_minor", "currency", "seeds": [... 4]},
     "pending_returns": {ALLOWANCE_ID: {"key", "certificates": [report, ... 4]}}}

Bytes are standard base64. Pure: reading a damaged part raises WalletError(wallet_corrupt);
the saves, and their order, are client.offline's.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.shared.codes import ErrorCode
from paycode.shared.emv.qr_signature import b64url
from paycode.shared.errors import CodeMalformed, WalletError
from paycode.shared.money import Money, format_amount
from paycode.shared.offline import Certificate, CertificateFields, parse_certificate
from paycode.shared.offline_proof import make_offline_key_proof

SECTION = "offline"
CERTIFICATES_PER_ALLOWANCE = 4
"""`c` of docs/offline.md §2.3: one fresh key, and one certificate, per quarter."""
NOT_YET_USED = -1
"""`last_used` before the first code: round-robin then starts at certificate 0."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text, validate=True)


def corrupt(what: str) -> WalletError:
    return WalletError(f"keystore holds a damaged {what}", code=ErrorCode.WALLET_CORRUPT)


def money_text(amount_minor: int, currency: str) -> str:
    return f"{format_amount(Money(amount_minor, currency))} {currency}"


@dataclass(frozen=True, slots=True)
class HeldCertificate:
    """One certificate of an allowance and what this wallet has made with it."""

    certificate: Certificate
    seed: bytes | None = field(repr=False)
    """The certified key's Ed25519 seed; None once handed back or expired (deleted)."""
    next_counter: int
    """Codes made so far: the next code carries this counter."""
    reserved_minor: int
    """The sum of the amount limits of the codes made so far: what they may take at most."""

    @property
    def fields(self) -> CertificateFields:
        return self.certificate.fields

    @property
    def counters_left(self) -> int:
        return max(0, self.fields.count_max - self.next_counter)

    @property
    def left_minor(self) -> int:
        return max(0, self.fields.total_cap_minor - self.reserved_minor)

    @property
    def most_minor(self) -> int:
        """The largest amount limit a code of it may carry now (0: none)."""
        if self.counters_left == 0:
            return 0
        return min(self.fields.per_payment_cap_minor, self.left_minor)

    def usable_at(self, device_now_s: float) -> bool:
        fields = self.fields
        return self.seed is not None and fields.not_before_s <= device_now_s < fields.expiry_s

    def report(self) -> dict[str, object]:
        """Its line of a hand-back (§2.4): what codes of it may still be presented."""
        return {
            "cert_id": self.fields.cert_id.hex(),
            "counters_used": self.next_counter,
            "reserved_minor": self.reserved_minor,
        }


@dataclass(frozen=True, slots=True)
class Allowance:
    allowance_id: str
    amount_minor: int
    currency: str
    expires_at_s: int
    returns_at_s: int
    """When the server sweeps what is left back to the balance by itself."""
    certificates: tuple[HeldCertificate, ...]
    last_used: int = NOT_YET_USED
    """The certificate of the last code: round-robin continues after it (§3.4)."""
    returning: bool = False
    """A hand-back was begun: the seeds are gone, the report waits for its answer."""

    @property
    def reserved_minor(self) -> int:
        return sum(held.reserved_minor for held in self.certificates)

    def left_minor(self, device_now_s: float) -> int:
        """What codes can still take from it now (0 once expired or handed back)."""
        usable = (held for held in self.certificates if held.usable_at(device_now_s))
        return sum(held.left_minor for held in usable if held.counters_left)

    def choose(self, amount_minor: int | None, device_now_s: float) -> tuple[int, int] | None:
        """(certificate index, amount limit) of the next code, round-robin from the one after
        the last used; None when no certificate has a counter and the amount left."""
        count = len(self.certificates)
        for step in range(1, count + 1):
            index = (self.last_used + step) % count
            held = self.certificates[index]
            if not held.usable_at(device_now_s) or held.counters_left == 0:
                continue
            limit = held.most_minor if amount_minor is None else amount_minor
            if 1 <= limit <= held.fields.per_payment_cap_minor and limit <= held.left_minor:
                return index, limit
        return None


@dataclass(frozen=True, slots=True)
class PendingTake:
    """An allowance request sent (or about to be) and not yet answered."""

    idempotency_key: str
    device_id: str
    """The device that signs the request: its id is in every key's proof."""
    amount_minor: int
    currency: str
    seeds: tuple[bytes, ...] = field(repr=False)

    def public_keys(self) -> list[bytes]:
        return [public_key_of(seed) for seed in self.seeds]

    def keys_json(self) -> list[dict[str, str]]:
        """The request's `keys`: each fresh public key with its proof of possession."""
        return [
            {
                "public_key": b64url(public_key_of(seed)),
                "proof": b64url(
                    make_offline_key_proof(seed, self.device_id, self.idempotency_key, index)
                ),
            }
            for index, seed in enumerate(self.seeds)
        ]


@dataclass(frozen=True, slots=True)
class PendingReturn:
    """A hand-back whose seeds are deleted and whose report waits for the server's answer."""

    allowance_id: str
    idempotency_key: str
    certificates: tuple[Mapping[str, object], ...]

    def body(self) -> dict[str, object]:
        return {"certificates": [dict(line) for line in self.certificates]}


def public_key_of(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def held_from_json(raw: Mapping[str, Any]) -> HeldCertificate:
    seed = raw.get("seed")
    return HeldCertificate(
        certificate=parse_certificate(unb64(raw["cert"])),
        seed=None if seed is None else unb64(seed),
        next_counter=int(raw["next_counter"]),
        reserved_minor=int(raw["reserved_minor"]),
    )


def held_to_json(held: HeldCertificate) -> dict[str, object]:
    raw: dict[str, object] = {
        "cert": b64(held.certificate.raw),
        "next_counter": held.next_counter,
        "reserved_minor": held.reserved_minor,
    }
    if held.seed is not None:
        raw["seed"] = b64(held.seed)
    return raw


def allowance_from_json(allowance_id: str, raw: Mapping[str, Any]) -> Allowance:
    try:
        return Allowance(
            allowance_id=allowance_id,
            amount_minor=int(raw["amount_minor"]),
            currency=str(raw["currency"]),
            expires_at_s=int(raw["expires_at_s"]),
            returns_at_s=int(raw["returns_at_s"]),
            certificates=tuple(held_from_json(item) for item in raw["certificates"]),
            last_used=int(raw.get("last_used", NOT_YET_USED)),
            returning=raw.get("returning") is True,
        )
    except (KeyError, TypeError, ValueError, binascii.Error, CodeMalformed) as error:
        raise corrupt("offline allowance") from error


def allowance_to_json(allowance: Allowance) -> dict[str, object]:
    return {
        "amount_minor": allowance.amount_minor,
        "currency": allowance.currency,
        "expires_at_s": allowance.expires_at_s,
        "returns_at_s": allowance.returns_at_s,
        "last_used": allowance.last_used,
        "returning": allowance.returning,
        "certificates": [held_to_json(held) for held in allowance.certificates],
    }


def allowances_in(section: Mapping[str, Any]) -> list[Allowance]:
    raw = section.get("allowances", {})
    if not isinstance(raw, dict):
        raise corrupt("offline allowance list")
    found = [allowance_from_json(str(key), item) for key, item in raw.items()]
    return sorted(found, key=lambda allowance: (allowance.expires_at_s, allowance.allowance_id))


def pending_take_in(section: Mapping[str, Any]) -> PendingTake | None:
    raw = section.get("pending_take")
    if raw is None:
        return None
    try:
        return PendingTake(
            idempotency_key=str(raw["key"]),
            device_id=str(raw["device_id"]),
            amount_minor=int(raw["amount_minor"]),
            currency=str(raw["currency"]),
            seeds=tuple(unb64(seed) for seed in raw["seeds"]),
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as error:
        raise corrupt("offline allowance request") from error


def pending_take_to_json(pending: PendingTake) -> dict[str, object]:
    return {
        "key": pending.idempotency_key,
        "device_id": pending.device_id,
        "amount_minor": pending.amount_minor,
        "currency": pending.currency,
        "seeds": [b64(seed) for seed in pending.seeds],
    }


def pending_returns_in(section: Mapping[str, Any]) -> list[PendingReturn]:
    raw = section.get("pending_returns", {})
    try:
        return [
            PendingReturn(str(allowance_id), str(item["key"]), tuple(item["certificates"]))
            for allowance_id, item in sorted(raw.items())
        ]
    except (AttributeError, KeyError, TypeError) as error:
        raise corrupt("offline hand-back") from error
