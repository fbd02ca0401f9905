"""Write tests/vectors/checkout_return.json: signed checkout returns (docs/spec.md, section 15).

Every input is fixed and Ed25519 signatures are deterministic (RFC 8032), so the file is
reproducible: a second implementation builds each return's message from `fields`, signs it
with the seed and must produce `signed_message_hex`, `signature_hex` and the `query` byte for
byte; its verifier must return `verdict` for each of `variants` (query strings, as a return
URL receives them) under `public_keys`. The test key is derived from a public label: never use
it outside tests. Run with `make vectors`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paycode.shared.checkout_return import build_return, signed_message, verify_return

OUT = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "checkout_return.json"
KEY_ID = "sk_00000000000000a1"
CASES: tuple[tuple[str, dict[str, str]], ...] = (
    ("checkout", {
        "order": "ord_00000000000000c1", "merchant": "mch_0000000000000001",
        "merchant_order_id": "WEB-1042", "status": "paid", "payment": "pay_00000000000000p1",
        "amount": "23.40", "currency": "CNY", "time": "1796601600", "key": KEY_ID,
    }),
    ("invoice link, order id needing percent-encoding", {
        "order": "ord_00000000000000c2", "merchant": "mch_0000000000000002",
        "merchant_order_id": "INV 2026/07 #12 & co", "status": "paid",
        "payment": "pay_00000000000000p2", "amount": "1200", "currency": "JPY",
        "time": "1796605200", "key": KEY_ID,
    }),
)  # fmt: skip
SHOP_QUERY = "cart=7"
"""The shop's own query: kept before the paycode_* parameters, outside what is signed."""


def seed() -> bytes:
    return hashlib.sha256(b"paycode test vector: checkout return key").digest()


def _query(pairs: list[tuple[str, str]]) -> str:
    return f"{SHOP_QUERY}&{urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote)}"


def _variants(pairs: list[tuple[str, str]]) -> dict[str, str]:
    def changed(name: str, value: str) -> list[tuple[str, str]]:
        return [(n, value if n == name else v) for n, v in pairs]

    return {
        "as issued": _query(pairs),
        "amount changed": _query(changed("paycode_amount", "0.01")),
        "status changed": _query(changed("paycode_status", "failed")),
        "payment changed": _query(changed("paycode_payment", "pay_00000000000000ff")),
        "time dropped": _query([(n, v) for n, v in pairs if n != "paycode_time"]),
        "field added": _query([*pairs, ("paycode_refunded", "0")]),
        "unknown key": _query(changed("paycode_key", "sk_00000000000000ff")),
    }


def _vector(label: str, fields: dict[str, str], key: Ed25519PrivateKey) -> dict[str, Any]:
    message = signed_message(fields)
    pairs = build_return(fields, lambda m: (KEY_ID, key.sign(m)))
    public = {KEY_ID: key.public_key().public_bytes_raw()}
    return {
        "label": label,
        "fields": fields,
        "signed_message_hex": message.hex(),
        "signature_hex": key.sign(message).hex(),
        "query": _query(pairs),
        "variants": [
            {"name": name, "query": query, "verdict": str(verify_return(
                urllib.parse.parse_qsl(query, keep_blank_values=True), public).verdict)}
            for name, query in _variants(pairs).items()
        ],
    }  # fmt: skip


def build() -> dict[str, Any]:
    key = Ed25519PrivateKey.from_private_bytes(seed())
    return {
        "format": "paycode-checkout-return-vectors/1",
        "ed25519_seed_hex": seed().hex(),
        "public_keys": {KEY_ID: key.public_key().public_bytes_raw().hex()},
        "vectors": [_vector(label, fields, key) for label, fields in CASES],
    }


def main() -> int:
    OUT.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
