"""Write tests/vectors/offline.json: offline certificates and v4 codes (docs/offline.md §8).

Every input is derived from a fixed label and Ed25519 signatures are deterministic (RFC 8032),
so the file is reproducible: a second implementation (webwallet/src/core) builds the
certificate from `certificate.fields` with `server.seed` and each code from its inputs with
`device.seed`, and must produce the bytes and text here exactly; its till check must give each
`verdicts` entry its `expected` outcome. Test keys: never use them outside tests. Run with
`make vectors`.
"""

from __future__ import annotations

import base64
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import qrcode
import qrcode.constants
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.shared import offline
from paycode.shared.binding import MerchantBinding
from paycode.shared.emv.tlv import encode_constructed, encode_tlv
from paycode.shared.offline import CertificateFields, PaymentFields
from paycode.shared.timestep import STEP_SECONDS, step_at
from paycode.shared.versions import v4_offline as v4
from paycode.shared.versions.base import Flags
from scripts.gen_vectors import derived

OUT = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "offline.json"
UNIX_S = 1_763_888_461
NOT_BEFORE_S = UNIX_S // 3600 * 3600
LIFETIME_S = 86_400
MERCHANT, TERMINAL, CURRENCY = "mer_corner_cafe", "t1", "CNY"
OTHER_MERCHANT, OTHER_TERMINAL = "mer_other_shop", "t9"
BOUND = int(Flags.MERCHANT_BOUND)


def _public(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


SERVER_SEED = derived("offline-server-key")
OTHER_SERVER_SEED = derived("offline-server-key:other")
DEVICE_SEED = derived("offline-device-key:a")


def certificate_fields(server_seed: bytes = SERVER_SEED) -> CertificateFields:
    """The defaults of docs/offline.md §2.3 for a 500.00 allowance: T = 50000 / 4."""
    return CertificateFields(
        cert_id=derived("offline-cert-id:a", offline.CERT_ID_BYTES),
        server_key_id=offline.key_id(_public(server_seed)),
        offline_pk=_public(DEVICE_SEED),
        currency=CURRENCY,
        per_payment_cap_minor=10_000,
        total_cap_minor=12_500,
        count_max=16,
        not_before_s=NOT_BEFORE_S,
        expiry_s=NOT_BEFORE_S + LIFETIME_S,
    )


def qr_version(text: str) -> int:
    """The QR version at ECC M, as appkit's renderer picks it (fit=True, byte mode)."""
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(text)
    qr.make(fit=True)
    assert qr.version is not None
    return int(qr.version)


def _certificate_vector() -> dict[str, Any]:
    fields = certificate_fields()
    raw = offline.sign_certificate(fields, SERVER_SEED)
    body = offline.pack_body(fields)
    return {
        "fields": {
            "format": offline.FORMAT,
            "cert_id": fields.cert_id.hex(),
            "server_key_id": fields.server_key_id.hex(),
            "offline_pk": fields.offline_pk.hex(),
            "currency": fields.currency,
            "per_payment_cap_minor": fields.per_payment_cap_minor,
            "total_cap_minor": fields.total_cap_minor,
            "count_max": fields.count_max,
            "not_before_s": fields.not_before_s,
            "expiry_s": fields.expiry_s,
        },
        "body": body.hex(),
        "signed_message": (offline.CERT_DOMAIN + body).hex(),
        "cert_sig": raw[offline.BODY_BYTES :].hex(),
        "cert": raw.hex(),
    }


def _code(
    payment: PaymentFields, binding: MerchantBinding | None = None, server_seed: bytes = SERVER_SEED
) -> str:
    raw = offline.sign_certificate(certificate_fields(server_seed), server_seed)
    digest = binding.digest if binding else b""
    signed = offline.sign_payment(offline.parse_certificate(raw), payment, DEVICE_SEED, digest)
    return v4.encode(signed)


def _code_vector(
    name: str, payment: PaymentFields, binding: MerchantBinding | None
) -> dict[str, Any]:
    code = _code(payment, binding)
    parsed = v4.parse(code)
    digest = binding.digest if binding else b""
    packed = offline.pack_payment(payment)
    return {
        "name": name,
        "unix_time": UNIX_S,
        "counter": payment.counter,
        "step": payment.step,
        "amount_limit_minor": payment.amount_limit_minor,
        "flags": payment.flags,
        "binding": None
        if binding is None
        else {"merchant_id": binding.merchant_id, "terminal_id": binding.terminal_id},
        "binding_digest": digest.hex(),
        "payment": packed.hex(),
        "device_message": offline.device_message(parsed.certificate.raw, packed, digest).hex(),
        "device_sig": parsed.device_sig.hex(),
        "payload": base64.b64decode(code).hex(),
        "code": code,
        "qr_version": qr_version(code),
    }


STEP = step_at(UNIX_S, STEP_SECONDS)
UNBOUND = PaymentFields(counter=0, step=STEP, amount_limit_minor=10_000)
BOUND_PAYMENT = PaymentFields(counter=1, step=STEP, amount_limit_minor=1_250, flags=BOUND)
BINDING = MerchantBinding(MERCHANT, TERMINAL)


def _swapped(code: str) -> str:
    """The genuine code re-framed with DF12 before DF11: same length, valid signatures."""
    parsed = v4.parse(code)
    app_data = (
        encode_tlv(v4.TAG_PAYMENT, offline.pack_payment(parsed.payment))
        + encode_tlv(v4.TAG_CERT, parsed.certificate.raw)
        + encode_tlv(v4.TAG_SIGNATURE, parsed.device_sig)
    )
    application = encode_tlv(v4.TAG_AID, v4.AID) + encode_constructed(v4.TAG_APP_DATA, app_data)
    payload = encode_tlv(v4.TAG_FORMAT, b"CPV01") + encode_constructed(v4.TAG_APP, application)
    return base64.b64encode(payload).decode()


def _noncanonical(code: str) -> str:
    """The last character before "=" with one of its two unused low bits set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    assert code.endswith("=") and not code.endswith("==")
    last = alphabet.index(code[-2])
    return code[:-2] + alphabet[last ^ 1] + "="


def _cap_flipped(code: str) -> str:
    """The certificate's per-payment cap low byte flipped, nothing re-signed."""
    parsed = v4.parse(code)
    raw = bytearray(parsed.certificate.raw)
    raw[59] ^= 0x01
    certificate = offline.parse_certificate(bytes(raw))
    return v4.encode(offline.OfflineCode(certificate, parsed.payment, parsed.device_sig))


def _amount_changed(code: str, amount_limit_minor: int) -> str:
    parsed = v4.parse(code)
    payment = replace(parsed.payment, amount_limit_minor=amount_limit_minor)
    return v4.encode(offline.OfflineCode(parsed.certificate, payment, parsed.device_sig))


def _verdict(
    name: str,
    code: str,
    expected: str,
    *,
    unix_s: int = UNIX_S,
    merchant: str = MERCHANT,
    terminal: str = TERMINAL,
    currency: str = CURRENCY,
) -> dict[str, Any]:
    till = {"merchant_id": merchant, "terminal_id": terminal, "currency": currency}
    return {"name": name, "code": code, "unix_time": unix_s, "till": till, "expected": expected}


def _verdicts(unbound: str, bound: str) -> list[dict[str, Any]]:
    expiry_s = NOT_BEFORE_S + LIFETIME_S
    step_start_s = STEP * STEP_SECONDS
    signed = [
        ("counter at count_max", replace(UNBOUND, counter=16), "code_invalid"),
        ("reserved PIN flag", replace(UNBOUND, flags=1), "code_invalid"),
        ("amount limit zero", replace(UNBOUND, amount_limit_minor=0), "code_invalid"),
        ("amount limit above cap", replace(UNBOUND, amount_limit_minor=10_001), "code_invalid"),
    ]
    return [
        _verdict("unbound accepted", unbound, "accepted"),
        _verdict("bound accepted at its terminal", bound, "accepted"),
        _verdict(
            "bound, at another till of its merchant",
            bound,
            "merchant_mismatch",
            terminal=OTHER_TERMINAL,
        ),
        _verdict(
            "bound at another merchant",
            bound,
            "merchant_mismatch",
            merchant=OTHER_MERCHANT,
            terminal=OTHER_TERMINAL,
        ),
        _verdict("unbound at another merchant", unbound, "accepted", merchant=OTHER_MERCHANT),
        _verdict("at expiry", unbound, "certificate_expired", unix_s=expiry_s),
        _verdict("before not_before", unbound, "certificate_expired", unix_s=NOT_BEFORE_S - 1),
        _verdict("two minutes later", unbound, "code_expired", unix_s=UNIX_S + 120),
        _verdict("step two behind", unbound, "accepted", unix_s=step_start_s + 89),
        _verdict("step three behind", unbound, "code_expired", unix_s=step_start_s + 90),
        _verdict("step one ahead", unbound, "accepted", unix_s=step_start_s - 30),
        _verdict("step two ahead", unbound, "code_expired", unix_s=step_start_s - 31),
        _verdict("other currency", unbound, "currency_mismatch", currency="USD"),
        _verdict("cap byte flipped", _cap_flipped(unbound), "certificate_invalid"),
        _verdict("amount limit changed", _amount_changed(unbound, 9_999), "code_invalid"),
        _verdict(
            "unknown key id", _code(UNBOUND, server_seed=OTHER_SERVER_SEED), "certificate_invalid"
        ),
        _verdict("swapped TLV fields", _swapped(unbound), "code_malformed"),
        _verdict("non-canonical base64", _noncanonical(unbound), "code_malformed"),
    ] + [_verdict(name, _code(payment), expected) for name, payment, expected in signed]


def build() -> dict[str, Any]:
    unbound = _code_vector("unbound", UNBOUND, None)
    bound = _code_vector("bound to a terminal", BOUND_PAYMENT, BINDING)
    server_public = _public(SERVER_SEED)
    return {
        "format": "paycode-offline-vectors/1",
        "step_seconds": STEP_SECONDS,
        "note": "Test keys derived from public labels. Never use them outside tests.",
        "server": {
            "seed": SERVER_SEED.hex(),
            "public_key": server_public.hex(),
            "key_id": offline.key_id(server_public).hex(),
        },
        "device": {"seed": DEVICE_SEED.hex(), "public_key": _public(DEVICE_SEED).hex()},
        "certificate": _certificate_vector(),
        "codes": [unbound, bound],
        "verdicts": _verdicts(unbound["code"], bound["code"]),
    }


def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    document = build()
    OUT.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {len(document['codes'])} codes, {len(document['verdicts'])} verdicts to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
