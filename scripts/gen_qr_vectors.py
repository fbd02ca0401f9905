"""Write tests/vectors/merchant_qr.json: signed merchant QR payloads (docs/spec.md, section 12).

Every input is fixed and Ed25519 signatures are deterministic (RFC 8032), so the file is
reproducible: a second implementation builds each payload from `fields`, signs it with the
seed and must produce `payload` byte for byte; its reader must return `verdict` for each
`variants` entry under `public_keys`. Test keys are derived from public labels: never use them
outside tests. Run with `make vectors`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.shared.emv.collection import CollectionCode, build_collection_payload, read_collection
from paycode.shared.emv.mpm import crc16_ccitt_false
from paycode.shared.emv.qr_signature import verify_signature

OUT = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "merchant_qr.json"
KEY_ID = "sk_00000000000000a1"
CASES: tuple[tuple[str, CollectionCode], ...] = (
    ("static poster", CollectionCode("mch_0000000000000001", "Corner Cafe", "Beijing", "CNY")),
    (
        "fixed amount, one till",
        CollectionCode(
            "mch_0000000000000001", "Corner Cafe", "Beijing", "CNY",
            terminal_id="term_00000000000001", amount="2.50",
        ),
    ),
    (
        "server order, own script",
        CollectionCode(
            "mch_0000000000000002", "Beijing Kaoya Dian", "Beijing", "CNY", amount="88.00",
            order_token="AAECAwQFBgcICQoLDA0ODxAR", reference="INV-1042",
            language="ZH", local_name="北京烤鸭店", local_city="北京",
        ),
    ),
)  # fmt: skip


def seed() -> bytes:
    return hashlib.sha256(b"paycode test vector: merchant QR key").digest()


def _with_crc(text_without_crc: str) -> str:
    unsigned = text_without_crc + "6304"
    return unsigned + f"{crc16_ccitt_false(unsigned.encode('utf-8')):04X}"


def _altered(payload: str) -> str:
    """The amount or the merchant name changed, the signature kept: what a sticker does."""
    changed = payload.replace("Corner Cafe", "Corner Cafx").replace("88.00", "00.01")
    return _with_crc(changed[:-8])


def _vector(label: str, code: CollectionCode, key: Ed25519PrivateKey) -> dict[str, Any]:
    payload = build_collection_payload(code, lambda message: (KEY_ID, key.sign(message)))
    public = {KEY_ID: key.public_key().public_bytes_raw()}
    read = read_collection(payload)
    assert read.signature is not None
    variants = {
        "as issued": payload,
        "altered": _altered(payload),
        "unsigned": build_collection_payload(code),
    }
    fields = {k: v for k, v in asdict(code).items() if v is not None and k != "signature"}
    return {
        "label": label,
        "fields": fields,
        "key_id": KEY_ID,
        "signed_message_hex": read.signature.message.hex(),
        "signature_hex": read.signature.signature.hex(),
        "payload": payload,
        "variants": [
            {"name": name, "payload": text,
             "verdict": str(verify_signature(read_collection(text).signature, public))}
            for name, text in variants.items()
        ],
    }  # fmt: skip


def build() -> dict[str, Any]:
    key = Ed25519PrivateKey.from_private_bytes(seed())
    return {
        "format": "paycode-merchant-qr-vectors/1",
        "ed25519_seed_hex": seed().hex(),
        "public_keys": {KEY_ID: key.public_key().public_bytes_raw().hex()},
        "vectors": [_vector(label, code, key) for label, code in CASES],
    }


def main() -> int:
    OUT.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
