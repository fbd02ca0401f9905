"""Offline payment: the allowance certificate, the payment fields, the till's own check.

docs/offline.md §2.3 and §3.2. The server signs a 137-byte certificate over a fresh device key
and caps; the device signs each payment with that key. A till with no line to the server
checks both signatures, the windows and the caps with the server's published offline keys
alone (§4.2 steps 3 to 6); what needs the till's log (replay, sums, exposure) is not here.

    body      = u8(1) | cert_id[16] | key_id[4] | offline_pk[32] | currency[3]
                | u32(p) | u32(T) | u8(n) | u32(not_before) | u32(expiry)        73 bytes
    cert      = body | Ed25519(sk_offline, "paycode-offline-cert/1\\n" | body)     137 bytes
    payment   = u8(counter) | u32(step) | u32(amount_limit_minor) | u8(flags)    10 bytes
    message   = "paycode-v4sig" | AID4 | cert | payment [| binding]

Malformed bytes raise CodeMalformed; a well-formed code that is wrong, expired or not for this
till is an `OfflineRefused` with a stable reason (never an exception).
"""

from __future__ import annotations

import enum
import hashlib
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.shared.binding import BINDING_BYTES
from paycode.shared.codes import ErrorCode
from paycode.shared.errors import CodeMalformed, WeakKey
from paycode.shared.keycheck import check_ed25519_public, ed25519_signed
from paycode.shared.timestep import STEP_SECONDS, step_at
from paycode.shared.versions.base import BOUND_FLAG

FORMAT = 1
CERT_ID_BYTES = 16
KEY_ID_BYTES = 4
KEY_BYTES = 32
CURRENCY_BYTES = 3
SIGNATURE_BYTES = 64
BODY_BYTES = 73
CERT_BYTES = BODY_BYTES + SIGNATURE_BYTES
PAYMENT_BYTES = 10
U32_MAX = 0xFFFFFFFF
COUNT_MAX_LIMIT = 255
"""`count_max` is one byte; codes carry counters 0..n-1."""

CERT_DOMAIN = b"paycode-offline-cert/1\n"
SIG_DOMAIN = b"paycode-v4sig"
AID4 = bytes.fromhex("F0") + b"PAYCODE" + bytes([4])
"""The v4 application identifier: in the container and in the signed message, so a device
signature cannot be replayed under another version's frame."""

KNOWN_FLAGS = BOUND_FLAG
"""Bit 1 MERCHANT_BOUND only: bit 0 (PIN) is reserved in v4, the PIN was given for the
allowance (§3.2)."""
STEPS_BACK = 2
STEPS_AHEAD = 1
"""§4.2 step 6: `E - 2 <= step <= E + 1`. Wider than online (both clocks may be off and no
server corrects the till's); single use rests on the log, not on this window."""

_CURRENCY_LETTERS = frozenset(string.ascii_uppercase)


class OfflineReason(enum.StrEnum):
    """Why a till refuses a well-formed v4 code on its own (docs/offline.md §4.2)."""

    CERTIFICATE_INVALID = ErrorCode.CERTIFICATE_INVALID
    CERTIFICATE_EXPIRED = ErrorCode.CERTIFICATE_EXPIRED
    CURRENCY_MISMATCH = ErrorCode.CURRENCY_MISMATCH
    CODE_INVALID = ErrorCode.CODE_INVALID
    MERCHANT_MISMATCH = ErrorCode.MERCHANT_MISMATCH
    CODE_EXPIRED = ErrorCode.CODE_EXPIRED


@dataclass(frozen=True, slots=True)
class CertificateFields:
    """What the server certifies about one fresh device key (§2.3). Amounts in minor units."""

    cert_id: bytes
    server_key_id: bytes
    offline_pk: bytes
    currency: str
    per_payment_cap_minor: int
    total_cap_minor: int
    count_max: int
    not_before_s: int
    expiry_s: int
    """Exclusive: the certificate is valid for `not_before_s <= now < expiry_s`."""


@dataclass(frozen=True, slots=True)
class Certificate:
    """A parsed certificate: its fields and the exact bytes they came from."""

    fields: CertificateFields
    raw: bytes
    """All 137 bytes: body then signature."""

    @property
    def body(self) -> bytes:
        return self.raw[:BODY_BYTES]

    @property
    def signature(self) -> bytes:
        return self.raw[BODY_BYTES:]


@dataclass(frozen=True, slots=True)
class PaymentFields:
    """One code's payment fields (§3.2)."""

    counter: int
    step: int
    amount_limit_minor: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class OfflineCode:
    """A parsed v4 code: the certificate, the payment, the device's signature."""

    certificate: Certificate
    payment: PaymentFields
    device_sig: bytes


@dataclass(frozen=True, slots=True)
class OfflineAccepted:
    code: OfflineCode


@dataclass(frozen=True, slots=True)
class OfflineRefused:
    reason: OfflineReason
    detail: str


OfflineVerdict = OfflineAccepted | OfflineRefused


def key_id(public_key: bytes) -> bytes:
    """SHA-256(public key)[0:4]: self-certifying, nothing to look up to trust it."""
    return hashlib.sha256(public_key).digest()[:KEY_ID_BYTES]


def _u32(name: str, value: int) -> bytes:
    if not 0 <= value <= U32_MAX:
        raise ValueError(f"{name} must be within 0..{U32_MAX}")
    return value.to_bytes(4, "big")


def pack_body(fields: CertificateFields) -> bytes:
    """The 73-byte body; raises ValueError (WeakKey for the key) for fields it cannot carry."""
    if len(fields.cert_id) != CERT_ID_BYTES or len(fields.server_key_id) != KEY_ID_BYTES:
        raise ValueError(f"cert_id is {CERT_ID_BYTES} bytes and the key id {KEY_ID_BYTES}")
    check_ed25519_public(fields.offline_pk)
    if len(fields.currency) != CURRENCY_BYTES or not set(fields.currency) <= _CURRENCY_LETTERS:
        raise ValueError("currency must be an ISO 4217 alpha code")
    if not 1 <= fields.per_payment_cap_minor <= fields.total_cap_minor:
        raise ValueError("caps must satisfy 1 <= per_payment_cap <= total_cap")
    if not 1 <= fields.count_max <= COUNT_MAX_LIMIT:
        raise ValueError(f"count_max must be within 1..{COUNT_MAX_LIMIT}")
    if not fields.not_before_s < fields.expiry_s:
        raise ValueError("not_before must come before expiry")
    body = (
        bytes([FORMAT])
        + fields.cert_id
        + fields.server_key_id
        + fields.offline_pk
        + fields.currency.encode("ascii")
        + _u32("per_payment_cap", fields.per_payment_cap_minor)
        + _u32("total_cap", fields.total_cap_minor)
        + bytes([fields.count_max])
        + _u32("not_before", fields.not_before_s)
        + _u32("expiry", fields.expiry_s)
    )
    assert len(body) == BODY_BYTES
    return body


def sign_certificate(fields: CertificateFields, server_seed: bytes) -> bytes:
    """The 137-byte certificate, signed by the server's offline key (Ed25519 seed)."""
    private = Ed25519PrivateKey.from_private_bytes(server_seed)
    if key_id(private.public_key().public_bytes_raw()) != fields.server_key_id:
        raise ValueError("server_key_id is not the id of this signing key")
    body = pack_body(fields)
    return body + private.sign(CERT_DOMAIN + body)


def parse_certificate(raw: bytes) -> Certificate:
    """The fields of 137 certificate bytes; CodeMalformed when they cannot be one.

    Only the layout is checked here: what the signature vouches for (caps, times, the key's
    strength) is judged by `verify_offline`, as a refusal."""
    if len(raw) != CERT_BYTES:
        raise CodeMalformed(f"an offline certificate is {CERT_BYTES} bytes")
    if raw[0] != FORMAT:
        raise CodeMalformed(f"offline certificate format {raw[0]} is not {FORMAT}")
    currency = raw[53:56]
    if not set(currency) <= {ord(c) for c in _CURRENCY_LETTERS}:
        raise CodeMalformed("an offline certificate's currency is three capital letters")
    fields = CertificateFields(
        cert_id=raw[1:17],
        server_key_id=raw[17:21],
        offline_pk=raw[21:53],
        currency=currency.decode("ascii"),
        per_payment_cap_minor=int.from_bytes(raw[56:60], "big"),
        total_cap_minor=int.from_bytes(raw[60:64], "big"),
        count_max=raw[64],
        not_before_s=int.from_bytes(raw[65:69], "big"),
        expiry_s=int.from_bytes(raw[69:73], "big"),
    )
    return Certificate(fields, bytes(raw))


def pack_payment(payment: PaymentFields) -> bytes:
    """The 10 payment bytes; ValueError for a value that does not fit its field."""
    if not 0 <= payment.counter <= 0xFF or not 0 <= payment.flags <= 0xFF:
        raise ValueError("counter and flags are one byte each")
    return (
        bytes([payment.counter])
        + _u32("step", payment.step)
        + _u32("amount_limit", payment.amount_limit_minor)
        + bytes([payment.flags])
    )


def unpack_payment(raw: bytes) -> PaymentFields:
    if len(raw) != PAYMENT_BYTES:
        raise CodeMalformed(f"v4 payment fields are {PAYMENT_BYTES} bytes")
    return PaymentFields(
        counter=raw[0],
        step=int.from_bytes(raw[1:5], "big"),
        amount_limit_minor=int.from_bytes(raw[5:9], "big"),
        flags=raw[9],
    )


def device_message(cert: bytes, payment: bytes, binding: bytes = b"") -> bytes:
    """What the device signs: the binding digest is signed, never carried (spec §10)."""
    assert len(binding) in (0, BINDING_BYTES)
    return SIG_DOMAIN + AID4 + cert + payment + binding


def sign_payment(
    certificate: Certificate, payment: PaymentFields, device_seed: bytes, binding: bytes = b""
) -> OfflineCode:
    """A code of `certificate`: ValueError when the flags and the binding disagree, or the
    seed is not the certificate's key (the code could never verify)."""
    if bool(payment.flags & BOUND_FLAG) != bool(binding):
        raise ValueError("a binding goes with the MERCHANT_BOUND flag, and only with it")
    private = Ed25519PrivateKey.from_private_bytes(device_seed)
    if private.public_key().public_bytes_raw() != certificate.fields.offline_pk:
        raise ValueError("the device seed is not the certificate's offline key")
    message = device_message(certificate.raw, pack_payment(payment), binding)
    return OfflineCode(certificate, payment, private.sign(message))


def _refuse(reason: OfflineReason, detail: str) -> OfflineRefused:
    return OfflineRefused(reason, detail)


def _certificate_genuine(
    certificate: Certificate, server_keys: Mapping[bytes, bytes]
) -> OfflineRefused | None:
    """§4.2 step 3: signed by a key the till holds, and what it certifies is usable."""
    fields = certificate.fields
    public_key = server_keys.get(fields.server_key_id)
    if public_key is None:
        return _refuse(OfflineReason.CERTIFICATE_INVALID, "signed by an unknown server key")
    if not ed25519_signed(public_key, certificate.signature, CERT_DOMAIN + certificate.body):
        return _refuse(OfflineReason.CERTIFICATE_INVALID, "the server's signature fails")
    try:
        check_ed25519_public(fields.offline_pk)
    except WeakKey:
        # Only a leaked server key signs one: a weak key would verify any payment.
        return _refuse(OfflineReason.CERTIFICATE_INVALID, "the certified key is weak")
    if not 1 <= fields.per_payment_cap_minor <= fields.total_cap_minor or fields.count_max < 1:
        return _refuse(OfflineReason.CERTIFICATE_INVALID, "the certificate's caps are void")
    return None


def check_certificate(
    certificate: Certificate,
    *,
    server_keys: Mapping[bytes, bytes],
    now_s: float,
    currency: str | None = None,
) -> OfflineRefused | None:
    """§4.2 steps 3 and 4 (without `denied`): None when the certificate may pay at `now_s`.

    `server_keys` maps key id to the offline public key, as the till fetched them (and has
    already dropped those beyond their `accept_until_s`)."""
    refused = _certificate_genuine(certificate, server_keys)
    if refused is not None:
        return refused
    fields = certificate.fields
    if currency is not None and fields.currency != currency:
        return _refuse(OfflineReason.CURRENCY_MISMATCH, f"certificate is in {fields.currency}")
    if not fields.not_before_s <= now_s < fields.expiry_s:
        return _refuse(OfflineReason.CERTIFICATE_EXPIRED, "outside the certificate's window")
    return None


def _payment_in_caps(code: OfflineCode) -> OfflineRefused | None:
    """§4.2 step 5 before the signature: what the certificate allows a code to say."""
    fields, payment = code.certificate.fields, code.payment
    if payment.flags & ~KNOWN_FLAGS:
        return _refuse(OfflineReason.CODE_INVALID, "the code carries flags v4 does not know")
    if payment.counter >= fields.count_max:
        return _refuse(OfflineReason.CODE_INVALID, "counter beyond the certificate's count")
    if not 1 <= payment.amount_limit_minor <= fields.per_payment_cap_minor:
        return _refuse(OfflineReason.CODE_INVALID, "amount limit outside 1..per-payment cap")
    return None


def check_payment(
    code: OfflineCode, *, bindings: Sequence[bytes], now_s: float
) -> OfflineRefused | None:
    """§4.2 steps 5 and 6: None when the device signed this payment and it is fresh.

    `bindings` is `charging_point_bindings(merchant_id, terminal_id)` of this till."""
    refused = _payment_in_caps(code)
    if refused is not None:
        return refused
    payment, pk = code.payment, code.certificate.fields.offline_pk
    message = device_message(code.certificate.raw, pack_payment(payment))
    if payment.flags & BOUND_FLAG:
        if not any(ed25519_signed(pk, code.device_sig, message + b) for b in bindings):
            return _refuse(OfflineReason.MERCHANT_MISMATCH, "the code is bound elsewhere")
    elif not ed25519_signed(pk, code.device_sig, message):
        return _refuse(OfflineReason.CODE_INVALID, "the device signature fails")
    expected = step_at(now_s, STEP_SECONDS)
    if not expected - STEPS_BACK <= payment.step <= expected + STEPS_AHEAD:
        return _refuse(OfflineReason.CODE_EXPIRED, "the code's time step is too far from now")
    return None


def verify_offline(
    code: OfflineCode,
    *,
    server_keys: Mapping[bytes, bytes],
    now_s: float,
    bindings: Sequence[bytes] = (),
    currency: str | None = None,
) -> OfflineVerdict:
    """What a till can check alone, in the order of §4.2; the first failure is the verdict."""
    refused = check_certificate(
        code.certificate, server_keys=server_keys, now_s=now_s, currency=currency
    )
    refused = refused or check_payment(code, bindings=bindings, now_s=now_s)
    return refused or OfflineAccepted(code)
